/**
 * Keeping an OpenAI streaming completion alive across a lost worker.
 *
 * While the stream runs, the front asks llama-server for each token's id (as `logprobs`, which
 * carry them) and strips them again if the client did not ask for logprobs. When the stream is
 * cut, the generation is resumed on the next plan's llama-server the way it was first computed
 * (measured in DESIGN.md: 12 of 12 greedy continuations identical this way, 10 of 12 when the
 * tokens go in as one batch): the prompt as one batch, then each token already sent on its own,
 * all in one slot with the prompt cache, then the rest of the generation, streamed to the client
 * as more chunks of the same completion.
 */

export interface ResumableRequest {
  readonly kind: 'chat' | 'text'
  readonly body: Record<string, unknown>
  /** Whether the client itself asked for logprobs (otherwise they are removed from chunks). */
  readonly clientLogprobs: boolean
  readonly maxTokens: number | undefined
}

/** An OpenAI streaming request we know how to resume; undefined for everything else. */
export function resumable(path: string, raw: Buffer): ResumableRequest | undefined {
  const kind = path === '/v1/chat/completions' ? 'chat' : path === '/v1/completions' ? 'text' : undefined
  if (kind === undefined) return undefined
  let body: unknown
  try {
    body = JSON.parse(raw.toString('utf8'))
  } catch {
    return undefined
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return undefined
  const request = body as Record<string, unknown>
  if (request['stream'] !== true || (request['n'] !== undefined && request['n'] !== 1)) return undefined
  if (kind === 'text' && typeof request['prompt'] !== 'string') return undefined
  const limit = request['max_completion_tokens'] ?? request['max_tokens']
  return {
    kind,
    body: request,
    clientLogprobs:
      kind === 'chat'
        ? request['logprobs'] === true
        : typeof request['logprobs'] === 'number' && request['logprobs'] > 0,
    maxTokens: typeof limit === 'number' ? limit : undefined
  }
}

/** The body to send upstream: the client's, asking for token ids too. */
export function upstreamBody(request: ResumableRequest): string {
  const body = { ...request.body }
  if (request.kind === 'chat') {
    body['logprobs'] = true
    body['top_logprobs'] = Math.max(1, Number(body['top_logprobs'] ?? 1))
  } else {
    body['logprobs'] = Math.max(1, Number(body['logprobs'] ?? 1))
  }
  return JSON.stringify(body)
}

/** Follows an OpenAI SSE stream: the token ids sent so far, whether it finished, a chunk to imitate. */
export class StreamTracker {
  readonly tokens: number[] = []
  private done = false
  /** The last chunk object sent: resumed chunks reuse its id, created, model and so on. */
  template: Record<string, unknown> | undefined
  private pending = ''
  private readonly request: ResumableRequest

  constructor(request: ResumableRequest) {
    this.request = request
  }

  /** True once the completion's last event went out: nothing to resume. */
  get finished(): boolean {
    return this.done
  }

  markFinished(): void {
    this.done = true
  }

  /** Takes upstream bytes; returns the complete events to send on, rewritten. */
  push(text: string): string {
    this.pending += text
    let out = ''
    let end = this.pending.indexOf('\n\n')
    while (end !== -1) {
      out += this.event(this.pending.slice(0, end))
      this.pending = this.pending.slice(end + 2)
      end = this.pending.indexOf('\n\n')
    }
    return out
  }

  private event(raw: string): string {
    const data = raw.startsWith('data: ') ? raw.slice(6) : undefined
    if (data === undefined) return `${raw}\n\n`
    if (data.trim() === '[DONE]') {
      this.done = true
      return `${raw}\n\n`
    }
    let chunk: Record<string, unknown>
    try {
      chunk = JSON.parse(data) as Record<string, unknown>
    } catch {
      return `${raw}\n\n`
    }
    const choice = (chunk['choices'] as Array<Record<string, unknown>> | undefined)?.[0]
    const logprobs = choice?.['logprobs'] as { content?: Array<{ id?: number }> } | null | undefined
    for (const entry of logprobs?.content ?? []) if (typeof entry.id === 'number') this.tokens.push(entry.id)
    if (choice !== undefined && !this.request.clientLogprobs) choice['logprobs'] = null
    this.template = chunk
    return `data: ${JSON.stringify(chunk)}\n\n`
  }
}

/**
 * Continues a cut generation on `url` (a fresh llama-server) and yields OpenAI SSE events for the
 * client, ending with `[DONE]`.
 */
export async function* resumeStream(
  url: string,
  request: ResumableRequest,
  tracker: StreamTracker,
  signal: AbortSignal
): AsyncGenerator<string> {
  const prompt = await promptTokens(url, request, signal)
  const slot = {
    id_slot: 0,
    cache_prompt: true,
    temperature: request.body['temperature'] ?? 1,
    seed: request.body['seed']
  }
  // Rebuild the cache exactly as it was first computed: the prompt as one batch, then each token alone.
  await native(url, { ...slot, prompt, n_predict: 0 }, signal)
  for (let i = 0; i < tracker.tokens.length; i++) {
    await native(
      url,
      { ...slot, prompt: [...prompt, ...tracker.tokens.slice(0, i + 1)], n_predict: 0 },
      signal
    )
  }
  const remaining = request.maxTokens === undefined ? -1 : request.maxTokens - tracker.tokens.length
  if (remaining === 0) {
    yield* finish(request, tracker, 'length')
    return
  }
  const res = await fetch(`${url}/completion`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      ...samplingOf(request.body),
      ...slot,
      prompt: [...prompt, ...tracker.tokens],
      n_predict: remaining,
      stream: true,
      return_tokens: true
    }),
    signal
  })
  if (!res.ok || res.body === null) throw new Error(`resuming failed: HTTP ${res.status}`)
  let pending = ''
  for await (const bytes of res.body) {
    pending += Buffer.from(bytes).toString('utf8')
    let end = pending.indexOf('\n\n')
    while (end !== -1) {
      const raw = pending.slice(0, end)
      pending = pending.slice(end + 2)
      end = pending.indexOf('\n\n')
      if (!raw.startsWith('data: ')) continue
      const part = JSON.parse(raw.slice(6)) as {
        content?: string
        tokens?: number[]
        stop?: boolean
        stop_type?: string
      }
      tracker.tokens.push(...(part.tokens ?? []))
      if (part.content !== undefined && part.content !== '')
        yield `data: ${JSON.stringify(chunkLike(request, tracker, part.content, null))}\n\n`
      if (part.stop === true) {
        yield* finish(request, tracker, part.stop_type === 'limit' ? 'length' : 'stop')
        return
      }
    }
  }
}

function* finish(request: ResumableRequest, tracker: StreamTracker, reason: string): Generator<string> {
  yield `data: ${JSON.stringify(chunkLike(request, tracker, '', reason))}\n\n`
  yield 'data: [DONE]\n\n'
}

/** A chunk shaped like the ones the client already got from this completion. */
function chunkLike(
  request: ResumableRequest,
  tracker: StreamTracker,
  text: string,
  finishReason: string | null
): Record<string, unknown> {
  const base = {
    ...(tracker.template ?? { object: request.kind === 'chat' ? 'chat.completion.chunk' : 'text_completion' })
  }
  delete base['usage']
  delete base['timings']
  const choice =
    request.kind === 'chat'
      ? {
          index: 0,
          delta: finishReason === null ? { content: text } : {},
          logprobs: null,
          finish_reason: finishReason
        }
      : { index: 0, text, logprobs: null, finish_reason: finishReason }
  return { ...base, choices: [choice] }
}

/** Sampling settings of the original request, in llama-server's own terms. */
function samplingOf(body: Record<string, unknown>): Record<string, unknown> {
  const keys = [
    'temperature',
    'top_p',
    'top_k',
    'min_p',
    'seed',
    'presence_penalty',
    'frequency_penalty',
    'repeat_penalty',
    'stop'
  ]
  return Object.fromEntries(keys.filter((k) => body[k] !== undefined).map((k) => [k, body[k]]))
}

/** The prompt's tokens as llama-server's completion endpoints make them (chat template applied). */
async function promptTokens(url: string, request: ResumableRequest, signal: AbortSignal): Promise<number[]> {
  let text = request.body['prompt'] as string
  if (request.kind === 'chat') {
    const templated = (await post(
      url,
      '/apply-template',
      { messages: request.body['messages'] },
      signal
    )) as { prompt: string }
    text = templated.prompt
  }
  return (
    (await post(url, '/tokenize', { content: text, add_special: true, parse_special: true }, signal)) as {
      tokens: number[]
    }
  ).tokens
}

async function native(url: string, body: Record<string, unknown>, signal: AbortSignal): Promise<void> {
  await post(url, '/completion', body, signal)
}

async function post(url: string, path: string, body: unknown, signal: AbortSignal): Promise<unknown> {
  const res = await fetch(`${url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
    signal
  })
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status} ${await res.text()}`)
  return await res.json()
}
