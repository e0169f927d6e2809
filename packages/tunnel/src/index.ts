export { bridge, waitDrain, type BridgeInit, type BridgeEnd } from './bridge.ts'
export { RpcMeter, type RpcTraffic } from './rpc-meter.ts'
export { startRpcTunnel, type RpcTunnel, type RpcTunnelInit } from './rpc-tunnel.ts'
export { startRpcService, type RpcService, type RpcServiceInit } from './rpc-service.ts'
