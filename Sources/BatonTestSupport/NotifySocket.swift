import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A stand-in for systemd's notification socket: a datagram socket that collects what a
/// process sends with `sd_notify`.
public final class NotifySocket: @unchecked Sendable {
    // @unchecked: used from the test's thread only.

    public let path: String
    private let descriptor: Int32

    /// Binds a datagram socket at `path`.
    public init(path: String) throws {
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { throw TestServerError("socket: \(String(cString: strerror(errno)))") }
        let bound = withUnixSocketAddress(path) { bind(fd, $0, $1) } ?? -1
        guard bound == 0 else {
            close(fd)
            throw TestServerError("bind \(path): \(String(cString: strerror(errno)))")
        }
        var timeout = timeval(tv_sec: 0, tv_usec: 200_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        self.path = path
        self.descriptor = fd
    }

    deinit {
        close(self.descriptor)
    }

    /// Collects messages until `until` is satisfied by what has arrived, or `seconds` pass.
    ///
    /// - Returns: every message received, in order.
    public func collect(for seconds: Double, until: ([String]) -> Bool = { _ in false }) -> [String] {
        var messages: [String] = []
        let deadline = Date().addingTimeInterval(seconds)
        var buffer = [UInt8](repeating: 0, count: 4_096)
        while Date() < deadline, !until(messages) {
            let count = buffer.withUnsafeMutableBytes { recv(self.descriptor, $0.baseAddress, $0.count, 0) }
            if count > 0 {
                messages.append(String(decoding: buffer[..<count], as: UTF8.self))
            }
        }
        return messages
    }
}
