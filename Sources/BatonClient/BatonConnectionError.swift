import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// The connection to `batond` failed, as opposed to `batond` refusing a request (which is a
/// `BatonError` carrying the protocol's error code).
public struct BatonConnectionError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What went wrong, for programs to match on.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        fileprivate enum Base: Hashable, Sendable {
            case unavailable, closed, protocolViolation
        }

        fileprivate var base: Base

        /// No connection could be made to the socket (no server, or no permission).
        public static let unavailable = Code(base: .unavailable)
        /// The connection closed before the reply came; the request may or may not have been applied.
        public static let closed = Code(base: .closed)
        /// The server sent something this client cannot read.
        public static let protocolViolation = Code(base: .protocolViolation)

        public var description: String {
            switch self.base {
            case .unavailable: "unavailable"
            case .closed: "closed"
            case .protocolViolation: "protocol_violation"
            }
        }
    }

    /// What went wrong.
    public var code: Code
    /// What went wrong, for people.
    public var message: String

    /// An error with a code and a message.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(self.code): \(self.message)" }
}

extension BatonConnectionError {
    /// No connection could be made to `path`, said in one plain sentence: the system's
    /// words for the cause, and what it usually means.
    static func unreachable(_ path: String, _ cause: any Error) -> BatonConnectionError {
        guard let errno = (cause as? IOError)?.errnoCode else {
            return BatonConnectionError(.unavailable, "cannot connect to batond at \(path): \(cause)")
        }
        let reason = String(cString: strerror(errno)).lowercased()
        let meaning =
            switch errno {
            case ECONNREFUSED: ", so batond is stopped or restarting"
            case EACCES, EPERM: ", so this user may not use the socket"
            case ENOENT: ", so batond is not running"
            default: ""
            }
        return BatonConnectionError(.unavailable, "cannot connect to batond at \(path): \(reason)\(meaning)")
    }
}
