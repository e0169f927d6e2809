export { bridge, waitDrain, type BridgeInit, type BridgeEnd, type Gate } from './bridge.ts'
export { NO_TRAFFIC, RpcGate, addTraffic, type RpcTraffic, type TrafficTotals } from './rpc-gate.ts'
export { startRpcTunnel, type RpcTunnel, type RpcTunnelInit } from './rpc-tunnel.ts'
export { startRpcService, type RpcService, type RpcServiceInit } from './rpc-service.ts'
export { RpcGateError, RpcIsolationError, RpcMuxError, TunnelError } from './errors.ts'
export {
  checkCommand,
  checkGraph,
  checkGraphStructure,
  MAX_GRAPH_BYTES,
  tensorBytes,
  type BufferRange,
  type SessionScope,
  type CheckedCommand
} from './rpc-isolation.ts'
export {
  type RpcMux,
  type RpcMuxInit,
  type MuxSessionEnd,
  type MuxPoolInfo,
  type MuxStats,
  type AttachOptions,
  type MuxSessionInfo
} from './mux-types.ts'
export { startRpcMux } from './rpc-mux.ts'
export {
  fairShare,
  roundRobin,
  type FairShareInit,
  type MuxScheduler,
  type MuxSessionView
} from './mux-scheduler.ts'
export { listenRpcMux, type MuxListener } from './mux-listener.ts'
export { GGML_OPS, GGML_OP_COUNT, requiredSources } from './ggml-ops.ts'
