export { PROTOCOL, DHT_PROTOCOL } from './ids.ts'
export { MessageError } from './errors.ts'
export { PoolName, rendezvousKey } from './pool.ts'
export { WorkerAdvert, AdvertRequest, MAX_ADVERT_BYTES } from './advert.ts'
export { decodeMessage, encodeMessage } from './message.ts'
export {
  LeaseInfo,
  LeaseSharing,
  LeaseEndReason,
  OrchestratorLeaseMessage,
  AgentLeaseMessage,
  MAX_LEASE_MESSAGE_BYTES
} from './lease.ts'
export {
  InvitePayload,
  CredentialPayload,
  RevocationPayload,
  RefusalReason,
  SIGNED_PREFIX,
  MAX_SIGNED_BYTES,
  MAX_POOL_UPDATE_BYTES,
  PoolUpdate,
  PoolUpdateAck
} from './pool-auth.ts'
export { Figures, Receipt, MAX_RECEIPT_BYTES, Spend, ApiKeyPayload, MAX_API_KEY_BYTES } from './credits.ts'
