import BatonProtocol

#if canImport(Glibc)
import Glibc
#endif

/// The fuzz target: bytes as a client would send them, cut into lines by the server's
/// framing rule (a line ends at `\n`; a `\r` before it is dropped; a line longer than the
/// limit is refused whole), each line decoded as a request. Whatever the bytes, decoding
/// must return a request or a rejection: never crash, hang or grow without bound.
///
/// Built for libFuzzer with `-DBATON_FUZZING` (see scripts/fuzz); built plainly it is a
/// replayer that decodes each file named on the command line, to reproduce a finding.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRequests(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let decoder = RequestDecoder(limits: ProtocolLimits(maximumLineBytes: 64 << 10))
    let bytes = UnsafeBufferPointer(start: data, count: size)
    var start = 0
    while start < bytes.count {
        guard let newline = bytes[start...].firstIndex(of: UInt8(ascii: "\n")) else { break }
        var end = newline
        if end > start, bytes[end - 1] == UInt8(ascii: "\r") { end -= 1 }
        if end - start <= decoder.limits.maximumLineBytes {
            let line = UnsafeBufferPointer(rebasing: bytes[start..<end])
            do {
                let decoded = try decoder.decode(line)
                _ = decoded.id?.utf8.count
            } catch {
                // A rejection must name a code the protocol documents.
                precondition(BatonError.Code(wireValue: error.error.code.wireValue) != nil)
                _ = Reply.failure(id: error.id, error.error)
            }
        }
        start = newline + 1
    }
    return 0
}

#if !BATON_FUZZING
@main
enum ReplayFuzzInputs {
    static func main() {
        for path in CommandLine.arguments.dropFirst() {
            guard let file = fopen(path, "rb") else {
                print("cannot open \(path)")
                continue
            }
            var bytes: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 65_536)
            while true {
                let count = fread(&buffer, 1, buffer.count, file)
                if count <= 0 { break }
                bytes += buffer[..<count]
            }
            fclose(file)
            _ = bytes.withUnsafeBufferPointer { fuzzRequests($0.baseAddress ?? UnsafePointer(bitPattern: 1)!, $0.count) }
            print("\(path): \(bytes.count) bytes decoded")
        }
    }
}
#endif
