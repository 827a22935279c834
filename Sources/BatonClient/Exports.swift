// What BatonClient's public API uses from the modules under it, so that `import BatonClient`
// alone is enough to catch `BatonError` and switch on its codes, name a `JobState`, build a
// `JSONValue` payload, or set a `BackoffPolicy`.
@_exported import struct BatonCore.BackoffPolicy
@_exported import struct BatonCore.FencingToken
@_exported import enum BatonCore.JobState
@_exported import struct BatonCore.TraceContext
@_exported import struct BatonProtocol.BatonError
@_exported import enum BatonProtocol.ClientContract
@_exported import enum BatonProtocol.JSONValue
