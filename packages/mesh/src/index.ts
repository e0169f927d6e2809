export { MeshError, IdentityError } from './errors.ts'
export {
  loadOrCreateIdentity,
  defaultIdentityPath,
  ephemeralPrivateKey,
  type Identity,
  type Role
} from './identity.ts'
export {
  createMeshNode,
  MDNS_SERVICE_TAG,
  type MeshNode,
  type MeshNodeInit,
  type MeshServices
} from './node.ts'
export { exchange, request, serveRequests, type ControlOptions } from './control.ts'
export { serveAdverts, fetchAdvert } from './adverts.ts'
export {
  startRendezvous,
  rendezvousCid,
  type Rendezvous,
  type RendezvousInit,
  type MeshRole
} from './rendezvous.ts'
export { dialDiscovered } from './dial-discovered.ts'
export { WorkerDirectory, type WorkerEntry, type WorkerDirectoryInit } from './worker-directory.ts'
export { peerIdFromString } from '@libp2p/peer-id'
export { multiaddr } from '@multiformats/multiaddr'
export { messageChannel, type MessageChannel } from './message-channel.ts'
export {
  acquireLease,
  LeaseRefusedError,
  type LeaseHandle,
  type LeaseClientInit,
  type ReceiptAnswer
} from './lease-client.ts'
export {
  PoolAuthError,
  createInvite,
  readInvite,
  createCredential,
  checkCredential,
  createRevocations,
  readRevocations,
  ownerOf,
  claimedOwner,
  type CredentialCheck
} from './pool-auth.ts'
export { tuneGcForBulkTraffic } from './gc-tuning.ts'
