import type { z } from 'zod'
import { MessageError } from './errors.ts'

const decoder = new TextDecoder('utf-8', { fatal: true })
const encoder = new TextEncoder()

/**
 * Parses one JSON message, bounding its size before reading it and validating it after. The
 * ZodError stays inside: callers get a MessageError with a readable reason.
 */
export function decodeMessage<T extends z.ZodType>(
  schema: T,
  bytes: Uint8Array,
  maxBytes: number
): z.infer<T> {
  if (bytes.length > maxBytes) {
    throw new MessageError('ERR_MESSAGE_TOO_LARGE', `message of ${bytes.length} bytes exceeds ${maxBytes}`)
  }
  let json: unknown
  try {
    json = JSON.parse(decoder.decode(bytes))
  } catch (err) {
    throw new MessageError('ERR_MESSAGE_MALFORMED', 'message is not UTF-8 JSON', { cause: err })
  }
  const parsed = schema.safeParse(json)
  if (!parsed.success) {
    const issue = parsed.error.issues[0]
    const where = issue === undefined || issue.path.length === 0 ? '' : ` at ${issue.path.join('.')}`
    throw new MessageError('ERR_MESSAGE_INVALID', `invalid message${where}: ${issue?.message ?? 'unknown'}`, {
      cause: parsed.error
    })
  }
  return parsed.data
}

export function encodeMessage(message: unknown, maxBytes: number): Uint8Array {
  const bytes = encoder.encode(JSON.stringify(message))
  if (bytes.length > maxBytes) {
    throw new MessageError('ERR_MESSAGE_TOO_LARGE', `message of ${bytes.length} bytes exceeds ${maxBytes}`)
  }
  return bytes
}
