export {
  startControlServer,
  callControl,
  ControlError,
  type ControlRoutes,
  type ControlServer
} from './control-socket.ts'
