export { startAgent, type Agent } from './agent.ts'
export { JoinOptions, PoolWeight, ByteSize } from './config.ts'
export { RpcServerSupervisor } from './rpc-server-supervisor.ts'
export type { AgentStatus } from './agent-status.ts'
