import type { GgufTypedValue } from './types.ts'

/** llama.cpp token types (llama_token_type). */
const TokenType = { normal: 1, unknown: 2, control: 3, byte: 6 } as const

/** SentencePiece's word-start marker, which llama.cpp renders as a space. */
const SPACE = '\u2581'

const WORDS = (
  'the of and to in is it that for on with as was be by at this are from or an have not they ' +
  'which one you had but all were there we can when your what more said some time will about ' +
  'mesh pool worker layer token model graph tensor lease slice node peer stream frank stein'
).split(' ')

export interface Vocab {
  readonly tokens: readonly string[]
  /** Ids of the tokens that produce no text (unknown, control) and of EOS. */
  readonly silent: ReadonlySet<number>
  readonly metadata: ReadonlyArray<readonly [string, GgufTypedValue]>
}

/**
 * A SentencePiece ("llama") vocabulary of printable ASCII pieces and some words. Every byte has a
 * `<0xXX>` token so that any prompt tokenizes, but only newline is a real byte token: the others
 * are control tokens, which llama-server renders as nothing. Whatever a random-weight model picks,
 * the text it produces is therefore valid UTF-8 (llama-server answers HTTP 500 otherwise).
 */
export function asciiVocab(): Vocab {
  const tokens: string[] = ['<unk>', '<s>', '</s>']
  const types: number[] = [TokenType.unknown, TokenType.control, TokenType.control]
  for (let byte = 0; byte < 256; byte++) {
    tokens.push(`<0x${byte.toString(16).toUpperCase().padStart(2, '0')}>`)
    types.push(byte === 0x0a ? TokenType.byte : TokenType.control)
  }
  const pieces = [SPACE]
  for (let c = 0x21; c < 0x7f; c++) pieces.push(String.fromCharCode(c), SPACE + String.fromCharCode(c))
  for (const word of WORDS) pieces.push(SPACE + word, word)
  for (const piece of new Set(pieces)) {
    tokens.push(piece)
    types.push(TokenType.normal)
  }
  // SentencePiece merges the pair whose result scores highest: prefer longer pieces.
  const scores = tokens.map((t, i) => (types[i] === TokenType.normal ? t.length - i / tokens.length : -1000))
  const silent = new Set(
    types.flatMap((type, id) => (type === TokenType.normal || type === TokenType.byte ? [] : [id]))
  )
  return {
    tokens,
    silent,
    metadata: [
      ['tokenizer.ggml.model', { type: 'string', value: 'llama' }],
      ['tokenizer.ggml.tokens', { type: 'array', itemType: 'string', value: tokens }],
      ['tokenizer.ggml.scores', { type: 'array', itemType: 'f32', value: scores }],
      ['tokenizer.ggml.token_type', { type: 'array', itemType: 'i32', value: types }],
      ['tokenizer.ggml.unknown_token_id', { type: 'u32', value: 0 }],
      ['tokenizer.ggml.bos_token_id', { type: 'u32', value: 1 }],
      ['tokenizer.ggml.eos_token_id', { type: 'u32', value: 2 }],
      ['tokenizer.ggml.add_bos_token', { type: 'bool', value: true }],
      ['tokenizer.ggml.add_eos_token', { type: 'bool', value: false }]
    ]
  }
}
