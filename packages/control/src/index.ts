export {
  startControlServer,
  callControl,
  ControlError,
  TextResponse,
  type ControlRoutes,
  type ControlServer
} from './control-socket.ts'
export { scrapedMetrics, type ScrapedMetrics } from './metrics.ts'
