export {
  planPlacement,
  placedBytes,
  type Plan,
  type PlannedWorker,
  type Candidate,
  type PlacementInit,
  type PlacementResult
} from './placement.ts'
