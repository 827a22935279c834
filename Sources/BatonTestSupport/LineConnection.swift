#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A blocking connection to a `batond` socket that sends and receives JSON lines.
///
/// Tests and the benchmark drive the server from plain threads, one connection each, the
/// way a simple worker in any language would; this type is that worker's socket.
public final class LineConnection {
    /// The socket, for callers that multiplex many connections with `poll`.
    public let descriptor: Int32
    private var buffer: [UInt8] = []
    private var readOffset = 0
    /// Where `recv` writes, allocated once: zeroing a fresh 64 KiB for every read was a
    /// sixth of the benchmark's load generator's CPU.
    private var chunk = [UInt8](repeating: 0, count: 65_536)

    /// The reasons a connection fails.
    public enum Failure: Error, CustomStringConvertible {
        case connect(path: String, errno: Int32)
        case closed
        case io(errno: Int32)
        case timedOut

        public var description: String {
            switch self {
            case .connect(let path, let code): "cannot connect to \(path): \(String(cString: strerror(code)))"
            case .closed: "the server closed the connection"
            case .io(let code): "socket error: \(String(cString: strerror(code)))"
            case .timedOut: "no reply within the timeout"
            }
        }
    }

    /// Connects to the unix socket at `path`.
    ///
    /// - Parameter timeoutSeconds: how long a read or write may block before it fails.
    public init(path: String, timeoutSeconds: Int = 30) throws {
        #if canImport(Glibc)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        #else
        let fd = socket(AF_UNIX, SOCK_STREAM, 0)
        #endif
        guard fd >= 0 else { throw Failure.io(errno: errno) }
        guard let result = withUnixSocketAddress(path, { connect(fd, $0, $1) }) else {
            close(fd)
            throw Failure.connect(path: path, errno: ENAMETOOLONG)
        }
        guard result == 0 else {
            let code = errno
            close(fd)
            throw Failure.connect(path: path, errno: code)
        }
        var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        self.descriptor = fd
    }

    /// Takes over a connected stream socket, such as one end of a `socketpair`.
    public init(descriptor: Int32, timeoutSeconds: Int = 30) {
        var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(descriptor, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        self.descriptor = descriptor
    }

    deinit {
        close(self.descriptor)
    }

    /// Sends raw bytes as they are; a request line must end with `\n`.
    public func send(_ text: String) throws {
        var bytes = Array(text.utf8)
        try self.send(bytes: &bytes)
    }

    public func send(bytes: inout [UInt8]) throws {
        var sent = 0
        while sent < bytes.count {
            let count = bytes.withUnsafeBytes { raw in
                Glibc.send(self.descriptor, raw.baseAddress! + sent, raw.count - sent, Int32(MSG_NOSIGNAL))
            }
            guard count > 0 else {
                if count < 0, errno == EINTR { continue }
                if count < 0, errno == EAGAIN || errno == EWOULDBLOCK { throw Failure.timedOut }
                throw Failure.io(errno: errno)
            }
            sent += count
        }
    }

    /// Reads the next line, without its newline.
    public func readLine() throws -> String {
        // Where the search for the newline resumes: a long line arrives in many reads, and
        // searching it again from its start after each one is quadratic.
        var searched = self.readOffset
        while true {
            if let newline = self.buffer[searched...].firstIndex(of: 0x0A) {
                let line = String(decoding: self.buffer[self.readOffset..<newline], as: UTF8.self)
                self.readOffset = newline + 1
                if self.readOffset > 65_536 {
                    self.buffer.removeFirst(self.readOffset)
                    self.readOffset = 0
                }
                return line
            }
            searched = self.buffer.count
            try self.fill()
        }
    }

    /// Reads until the server closes the connection or the timeout passes.
    ///
    /// - Returns: `true` when the server closed it.
    public func waitForClose() throws -> Bool {
        while true {
            do {
                try self.fill()
            } catch Failure.closed {
                return true
            } catch Failure.timedOut {
                return false
            } catch Failure.io(let code) where code == ECONNRESET {
                return true
            }
        }
    }

    /// Reads what has arrived without blocking and returns the complete lines in it.
    public func readAvailableLines() throws -> [String] {
        let count = self.receive(flags: Int32(MSG_DONTWAIT))
        if count == 0 { throw Failure.closed }
        if count < 0 {
            if errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR { return [] }
            throw Failure.io(errno: errno)
        }
        var lines: [String] = []
        while let newline = self.buffer[self.readOffset...].firstIndex(of: 0x0A) {
            lines.append(String(decoding: self.buffer[self.readOffset..<newline], as: UTF8.self))
            self.readOffset = newline + 1
        }
        if self.readOffset == self.buffer.count {
            self.buffer.removeAll(keepingCapacity: true)
            self.readOffset = 0
        }
        return lines
    }

    private func fill() throws {
        let count = self.receive(flags: 0)
        if count == 0 { throw Failure.closed }
        if count < 0 {
            if errno == EAGAIN || errno == EWOULDBLOCK { throw Failure.timedOut }
            if errno == EINTR { return }
            throw Failure.io(errno: errno)
        }
    }

    /// One `recv` into the buffer; its result as `recv` returns it.
    private func receive(flags: Int32) -> Int {
        let count = self.chunk.withUnsafeMutableBytes { recv(self.descriptor, $0.baseAddress, $0.count, flags) }
        if count > 0 { self.buffer.append(contentsOf: self.chunk[..<count]) }
        return count
    }

    /// Closes the sending half, as a client that has nothing more to say.
    public func shutdownWrite() {
        shutdown(self.descriptor, Int32(SHUT_WR))
    }
}
