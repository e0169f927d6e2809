import type { RpcTraffic, RpcTunnel } from '@frankenstein-mesh/tunnel'

export type TunnelTotals = Omit<RpcTraffic, 'commands'>

/** A tunnel's counters summed over every connection it carried. */
export function tunnelTotals(tunnel: RpcTunnel): TunnelTotals {
  let sum: TunnelTotals = {
    requestBytes: 0,
    responseBytes: 0,
    uploadBytes: 0,
    computes: 0,
    computeMs: 0,
    heldBytes: 0,
    memoryGiBs: 0
  }
  for (const c of tunnel.traffic())
    sum = {
      requestBytes: sum.requestBytes + c.requestBytes,
      responseBytes: sum.responseBytes + c.responseBytes,
      uploadBytes: sum.uploadBytes + c.uploadBytes,
      computes: sum.computes + c.computes,
      computeMs: sum.computeMs + c.computeMs,
      heldBytes: sum.heldBytes + c.heldBytes,
      memoryGiBs: sum.memoryGiBs + c.memoryGiBs
    }
  return sum
}
