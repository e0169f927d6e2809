import { setFlagsFromString } from 'node:v8'

let tuned = false

/**
 * A tunnel end allocates its traffic several times over in Buffers outside the JavaScript heap
 * (each 64 KiB socket read, each Noise ciphertext and plaintext). With V8's defaults, every few
 * tens of MB of those start a full mark of the heap: a 512 MiB upload ran ~45 major GCs per
 * process, and marking took ~45% of the tunnel's CPU. Counting external memory in the global
 * limit and letting the heap grow 5x its live size between collections cut that to 2 and the
 * CPU per GB from ~8 s to ~3.5 s (orchestrator + agent), for ~60 MB more peak RSS per process.
 * Process-wide and idempotent, so it is the process's choice, not a library's side effect: the
 * entry points of the processes that carry tunnels (mesh-agent, mesh-orch, the bench's tunnel end)
 * call it first.
 */
export function tuneGcForBulkTraffic(): void {
  if (tuned) return
  tuned = true
  setFlagsFromString('--external-memory-accounted-in-global-limit')
  setFlagsFromString('--heap-growing-percent=400')
}
