export { bridge, waitDrain, type BridgeInit, type BridgeEnd, type Gate } from './bridge.ts'
export { RpcGate, type RpcTraffic } from './rpc-gate.ts'
export { startRpcTunnel, type RpcTunnel, type RpcTunnelInit } from './rpc-tunnel.ts'
export { startRpcService, type RpcService, type RpcServiceInit } from './rpc-service.ts'
