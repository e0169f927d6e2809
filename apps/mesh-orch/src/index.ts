export {
  planPlacement,
  placedBytes,
  type Plan,
  type PlannedWorker,
  type Candidate,
  type PlacementInit,
  type PlacementResult
} from './placement.ts'
export { Orchestrator, describePlan, type ServingState } from './orchestrator.ts'
export { ServeOptions } from './config.ts'
export { startServing, type Serving, type OrchestratorStatus } from './serve.ts'
export { DashboardSnapshot } from './dashboard/snapshot.ts'
