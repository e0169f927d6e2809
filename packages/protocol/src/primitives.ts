import { z } from 'zod'

/** A non-negative integer JavaScript holds exactly: byte counts, epoch milliseconds. */
export const SafeUint = z
  .number()
  .int()
  .nonnegative()
  .max(2 ** 53 - 1)

/** A positive one: lease ids, credential serials. */
export const SafeId = z
  .number()
  .int()
  .positive()
  .max(2 ** 53 - 1)

/** A libp2p peer id in its base58 text form (Ed25519 keys: 12D3Koo...). */
export const PeerIdString = z.string().regex(/^[1-9A-HJ-NP-Za-km-z]{40,60}$/, 'a libp2p peer id')
