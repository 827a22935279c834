import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Checks on a socket path before binding it.
enum SocketPath {
    /// Whether a server is accepting connections on `path` right now.
    ///
    /// A socket file left by a crashed server refuses connections; one that belongs to a
    /// live server accepts them and must not be removed from under it.
    static func hasLiveServer(at path: String) -> Bool {
        #if canImport(Glibc)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        #else
        let fd = socket(AF_UNIX, SOCK_STREAM, 0)
        #endif
        guard fd >= 0 else { return false }
        defer { close(fd) }
        guard let address = try? SocketAddress(unixDomainSocketPath: path) else { return false }
        let result = address.withSockAddr { pointer, size in connect(fd, pointer, socklen_t(size)) }
        return result == 0
    }

    /// Whether something exists at `path`.
    static func exists(_ path: String) -> Bool {
        var info = stat()
        return lstat(path, &info) == 0
    }

    /// Whether `path` is a socket file.
    static func isSocket(_ path: String) -> Bool {
        var info = stat()
        return lstat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFSOCK
    }
}
