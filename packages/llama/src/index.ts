export {
  LlamaError,
  RpcProtocolError,
  RpcClientError,
  GgufError,
  BinaryError,
  ProcessError
} from './errors.ts'
export { LLAMA_SOURCE, BINARY_NAMES } from './constants.ts'

export { detectBackend, parseBackend, type LlamaBackend } from './binaries/backend.ts'
export { cacheRoot } from './binaries/cache-dir.ts'
export { buildDir, rpcServerBuildDir, type BuildInfo } from './binaries/build-info.ts'
export {
  locateBinaries,
  locateRpcServer,
  BINARY_ENV,
  type LlamaBinaries,
  type RpcServerBinary,
  type BinarySource
} from './binaries/locate.ts'
export { buildBinaries, buildRpcServer } from './binaries/build.ts'
export { ensureBinaries, ensureRpcServer, type EnsureBinariesOptions } from './binaries/ensure.ts'

export { startProcess, describeExit, type ManagedProcess, type ExitInfo } from './process/managed-process.ts'
export { freeLoopbackPort } from './process/free-port.ts'
export {
  listeningSockets,
  listenersOnPort,
  residentBytes,
  parseProcNetTcp,
  parseLsof,
  isLoopback,
  type ListeningSocket
} from './process/listening-sockets.ts'
export { startRpcServer, type RpcServer, type RpcServerInit } from './process/rpc-server.ts'
export {
  startLlamaServer,
  llamaServerArgs,
  type LlamaServer,
  type LlamaServerInit,
  type DeviceBuffers
} from './process/llama-server.ts'

export * from './rpc/protocol.ts'
export { PendingResponses, type ExpectedResponse } from './rpc/pending-responses.ts'
export {
  RpcRequestParser,
  DEFAULT_MAX_PAYLOAD_SIZE,
  defaultHeadSize,
  type RpcRequestFrame,
  type RpcRequestParserInit
} from './rpc/request-parser.ts'
export {
  RpcResponseParser,
  type RpcResponseFrame,
  type RpcResponseParserInit
} from './rpc/response-parser.ts'
export { connectRpc, type RpcClient, type RpcVersion, type DeviceMemory } from './rpc/client.ts'

export { readGguf, type GgufInfo, type GgufTensorInfo } from './gguf/reader.ts'
export { writeGguf, type GgufSpec, type GgufTensorSpec } from './gguf/writer.ts'
export { GGML_TYPES, GgmlType, tensorByteSize, type GgufValue, type GgufTypedValue } from './gguf/types.ts'
export { modelLayout, type ModelLayout } from './gguf/layout.ts'
export {
  TINY_MODEL,
  LARGE_MODEL,
  generateLlamaModel,
  llamaModelGguf,
  modelId,
  type LlamaModelSpec
} from './gguf/llama-model.ts'
export { asciiVocab } from './gguf/vocab.ts'

export { layerDevices, layerRanges } from './tensor-split.ts'
export { createProgress, type Progress } from './progress.ts'
export { ensureModel } from './gguf/model-cache.ts'
export { createLogger, silentLogger } from './logger.ts'
export { encodeRequest, encodeResponse, encodeTensor, decodeTensor, type RpcTensor } from './rpc/encode.ts'
