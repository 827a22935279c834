import CSystemd

#if canImport(Glibc)
import Glibc
#endif

/// The sockets systemd passed to this process (socket activation).
public enum ListenSockets {
    /// Why an inherited socket cannot be used.
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    /// The one unix stream socket systemd passed, or `nil` when not socket-activated.
    ///
    /// - Throws: ``Failure`` when systemd passed something other than exactly one listening
    ///   unix stream socket: serving the wrong kind of socket would fail in odd ways later.
    public static func inheritedUnixSocket() throws(Failure) -> Int32? {
        let count = sd_listen_fds(1)
        if count == 0 { return nil }
        guard count > 0 else {
            throw Failure(description: "sd_listen_fds failed: \(String(cString: strerror(-count)))")
        }
        guard count == 1 else {
            throw Failure(description: "systemd passed \(count) sockets; batond serves exactly one")
        }
        let descriptor = SD_LISTEN_FDS_START
        guard sd_is_socket_unix(descriptor, Int32(SOCK_STREAM.rawValue), 1, nil, 0) > 0 else {
            throw Failure(description: "the socket systemd passed is not a listening unix stream socket")
        }
        return descriptor
    }
}
