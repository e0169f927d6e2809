import type { RpcCommand } from './protocol.ts'

export interface ExpectedResponse {
  readonly command: RpcCommand
  readonly size: number
}

/**
 * The responses a connection still owes, oldest first. The request parser pushes one for every
 * response-bearing command; the response parser shifts one per response, so matching is FIFO.
 */
export class PendingResponses {
  private items: ExpectedResponse[] = []
  private head = 0

  get length(): number {
    return this.items.length - this.head
  }

  push(expected: ExpectedResponse): void {
    this.items.push(expected)
  }

  shift(): ExpectedResponse | undefined {
    const item = this.items[this.head]
    if (item === undefined) return undefined
    this.head++
    if (this.head > 64 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head)
      this.head = 0
    }
    return item
  }

  peek(): ExpectedResponse | undefined {
    return this.items[this.head]
  }
}
