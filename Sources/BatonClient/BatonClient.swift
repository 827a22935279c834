import BatonCore
import BatonProtocol
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A connection to `batond`, shared by every task that uses it.
///
/// One connection carries many requests at once: each gets an id and its reply is matched
/// by that id, so a long-polling ``claim(queues:wait:leaseDuration:worker:)`` does not hold
/// up a heartbeat sent after it. When `batond` restarts, the client reconnects with backoff;
/// requests that are safe to repeat (reads, heartbeats, checkpoints and completes, which
/// the server answers the same way twice) are sent again, and the others fail with
/// ``BatonConnectionError/Code/closed`` so the caller can decide.
///
/// ```swift
/// let client = BatonClient(socketPath: "/run/baton/baton.sock")
/// let job = try await client.enqueue(queue: "emails", payload: ["to": "ada@example.com"])
/// if let lease = try await client.claim(queues: ["emails"], wait: .seconds(30)) {
///     try await lease.complete()
/// }
/// ```
public final class BatonClient: Sendable {
    /// How the client connects and reconnects.
    public struct Configuration: Sendable {
        /// The `batond` socket.
        public var socketPath: String
        /// How long to keep trying to reach a server that is not answering (restarting).
        public var reconnectTimeout: Duration
        /// The first pause between connection attempts; it doubles up to a second.
        public var reconnectBackoff: Duration

        /// A configuration for the socket at `socketPath`; without one, `$BATON_SOCKET`, else
        /// `baton-data/baton.sock` (see ``ClientContract/socketPath(explicit:environment:)``).
        public init(
            socketPath: String? = nil, reconnectTimeout: Duration = .seconds(30), reconnectBackoff: Duration = .milliseconds(25)
        ) {
            self.socketPath = ClientContract.socketPath(explicit: socketPath, environment: ProcessInfo.processInfo.environment)
            self.reconnectTimeout = reconnectTimeout
            self.reconnectBackoff = reconnectBackoff
        }
    }

    /// How this client connects.
    public let configuration: Configuration
    private let eventLoopGroup: any EventLoopGroup
    private let logger: Logger
    private let state = NIOLockedValueBox(State())

    private struct State {
        var connection: Connection?
        var nextRequestID: Int64 = 1
        var closed = false
        /// Whether a connection was ever made: until then, a missing socket is a mistake.
        var everConnected = false
    }

    /// Creates a client for the socket at `socketPath`, else `$BATON_SOCKET`, else
    /// `baton-data/baton.sock`; it connects on first use.
    public convenience init(socketPath: String? = nil, logger: Logger = Logger(label: "baton.client")) {
        self.init(configuration: Configuration(socketPath: socketPath), logger: logger)
    }

    /// Creates a client; it connects on first use.
    /// 
    /// - Parameters:
    ///   - configuration: the socket, and how to reconnect.
    ///   - eventLoopGroup: where the connection runs; NIO's shared group by default.
    ///   - logger: for reconnects and other events worth a line.
    public init(
        configuration: Configuration,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "baton.client")
    ) {
        self.configuration = configuration
        self.eventLoopGroup = eventLoopGroup
        self.logger = logger
    }

    /// Closes the connection; requests still waiting for replies fail.
    public func close() async {
        let connection = self.state.withLockedValue { state -> Connection? in
            state.closed = true
            defer { state.connection = nil }
            return state.connection
        }
        if let channel = try? await connection?.channel.get() {
            try? await channel.close()
        }
    }

    // MARK: Requests

    /// Sends one request and returns the reply's fields.
    ///
    /// - Parameters:
    ///   - op: the op's name.
    ///   - arguments: writes the request's arguments.
    ///   - abandoned: called with the reply if it arrives after the calling task was
    ///     cancelled and stopped waiting for it; a claim uses it to give back a job that
    ///     nobody will work on.
    /// - Throws: ``BatonError`` when the server refuses the request,
    ///   ``BatonConnectionError`` when no reply could be had, `CancellationError` when
    ///   the task was cancelled while waiting.
    func request(
        _ op: String,
        abandoned: AbandonedReplyHandler? = nil,
        _ arguments: (inout JSONWriter) -> Void = { _ in }
    ) async throws -> [String: JSONValue] {
        let deadline = ContinuousClock.now + self.configuration.reconnectTimeout
        var pause = self.configuration.reconnectBackoff
        while true {
            let connection: Connection
            let channel: any Channel
            do {
                (connection, channel) = try await self.connectedChannel()
            } catch let error as BatonConnectionError where error.code == .closed && self.isClosed {
                throw error
            } catch let error as BatonConnectionError where error.code == .unavailable {
                throw error  // no socket to wait for
            } catch {
                // Nothing was sent: waiting for the server to come back is always safe.
                guard ContinuousClock.now + pause < deadline else {
                    throw BatonConnectionError.unreachable(self.configuration.socketPath, error)
                }
                try await Task.sleep(for: pause)
                pause = min(pause * 2, .seconds(1))
                continue
            }
            let id = self.state.withLockedValue { state in
                defer { state.nextRequestID += 1 }
                return state.nextRequestID
            }
            var writer = JSONWriter()
            writer.beginObject()
            writer.member("op", op)
            writer.member("id", id)
            arguments(&writer)
            writer.endObject()
            let promise = channel.eventLoop.makePromise(of: IncomingReply.self)
            channel.writeAndFlush((OutgoingRequest(requestID: id, line: writer.text), promise), promise: nil)
            let reply: IncomingReply
            do {
                reply = try await Self.reply(to: promise.futureResult) { late in
                    abandoned?.handle(late.fields, channel)
                }
            } catch is CancellationError {
                throw CancellationError()
            } catch {
                self.forget(connection)
                // Sent again only if applying it twice is the same as once (PROTOCOL.md).
                guard ClientContract.resendableOps.contains(op), ContinuousClock.now < deadline else {
                    throw BatonConnectionError(.closed, "the connection closed before batond answered `\(op)`: \(error)")
                }
                self.logger.debug("connection lost; sending again", metadata: ["op": "\(op)"])
                continue
            }
            do {
                return try Self.check(reply.fields)
            } catch let error as BatonError
                where ClientContract.retryLaterCodes.contains(error.code) && ClientContract.resendableOps.contains(op)
                && ContinuousClock.now + pause < deadline
            {
                // "Not now": sent again after a pause, as after a lost reply (PROTOCOL.md).
                self.logger.debug("batond cannot serve it now; sending again", metadata: ["op": "\(op)", "code": "\(error.code)"])
                try await Task.sleep(for: pause)
                pause = min(pause * 2, .seconds(1))
            }
        }
    }

    /// Waits for a reply, or stops waiting when the task is cancelled; a reply that comes
    /// after that goes to `late`.
    private static func reply(
        to future: EventLoopFuture<IncomingReply>,
        late: @escaping @Sendable (IncomingReply) -> Void
    ) async throws -> IncomingReply {
        let waiter = NIOLockedValueBox<CheckedContinuation<IncomingReply, any Error>?>(nil)
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                // A task cancelled before this point has already run `onCancel`, which found
                // no one to resume: it must not be left waiting for the reply.
                let alreadyCancelled = waiter.withLockedValue { waiting -> Bool in
                    if Task.isCancelled { return true }
                    waiting = continuation
                    return false
                }
                if alreadyCancelled {
                    continuation.resume(throwing: CancellationError())
                }
                future.whenComplete { result in
                    if let continuation = waiter.withLockedValue({ $0.take() }) {
                        continuation.resume(with: result)
                    } else if case .success(let reply) = result {
                        late(reply)
                    }
                }
            }
        } onCancel: {
            waiter.withLockedValue { $0.take() }?.resume(throwing: CancellationError())
        }
    }

    /// Sends a request whose reply nobody waits for.
    static func sendUnanswered(_ op: String, on channel: any Channel, _ arguments: (inout JSONWriter) -> Void) {
        var writer = JSONWriter()
        writer.beginObject()
        writer.member("op", op)
        // Negative ids never collide with the client's own, which count up from 1.
        let id = -Int64.random(in: 1...Int64.max)
        writer.member("id", id)
        arguments(&writer)
        writer.endObject()
        let promise = channel.eventLoop.makePromise(of: IncomingReply.self)
        promise.futureResult.whenComplete { _ in }
        channel.writeAndFlush((OutgoingRequest(requestID: id, line: writer.text), promise), promise: nil)
    }

    private static func check(_ fields: [String: JSONValue]) throws -> [String: JSONValue] {
        guard case .bool(false)? = fields["ok"] else { return fields }
        guard case .object(let error)? = fields["error"], case .string(let wire)? = error["code"] else {
            throw BatonConnectionError(.protocolViolation, "an error reply without an error code")
        }
        let message: String
        if case .string(let text)? = error["message"] { message = text } else { message = wire }
        var state: JobState?
        if case .string(let name)? = error["state"] { state = JobState(rawValue: name) }
        // A code this version does not know is treated as `internal`, as the protocol asks.
        throw BatonError(BatonError.Code(wireValue: wire) ?? .internal, message, state: state)
    }

    // MARK: The connection

    /// One attempt at a connection; replaced as a whole when it fails.
    private final class Connection: Sendable {
        let channel: EventLoopFuture<any Channel>

        init(channel: EventLoopFuture<any Channel>) {
            self.channel = channel
        }
    }

    private var isClosed: Bool { self.state.withLockedValue { $0.closed } }

    private func connectedChannel() async throws -> (Connection, any Channel) {
        let connection = try self.state.withLockedValue { state -> Connection in
            guard !state.closed else { throw BatonConnectionError(.closed, "the client was closed") }
            if let connection = state.connection { return connection }
            let connection = Connection(channel: self.connect())
            state.connection = connection
            return connection
        }
        do {
            let channel = try await connection.channel.get()
            guard channel.isActive else { throw BatonConnectionError(.closed, "the connection closed") }
            self.state.withLockedValue { $0.everConnected = true }
            return (connection, channel)
        } catch {
            self.forget(connection)
            // No socket file before any connection is a wrong path or a batond not started:
            // said at once. Later it is batond restarting, which re-creates its socket.
            let path = self.configuration.socketPath
            if !self.state.withLockedValue({ $0.everConnected }), !FileManager.default.fileExists(atPath: path) {
                throw BatonConnectionError(
                    .unavailable, "no batond socket at \(path): is batond running? Pass the path, or set BATON_SOCKET")
            }
            throw error
        }
    }

    private func connect() -> EventLoopFuture<any Channel> {
        ClientBootstrap(group: self.eventLoopGroup)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandlers(
                        ByteToMessageHandler(ReplyLineDecoder(), maximumBufferSize: 64 << 20),
                        ReplyDecoder(),
                        RequestEncoder(),
                        ReplyRouter()
                    )
                }
            }
            .connect(unixDomainSocketPath: self.configuration.socketPath)
    }

    /// Drops a dead connection so that the next request makes a new one.
    private func forget(_ connection: Connection) {
        self.state.withLockedValue { state in
            if state.connection === connection { state.connection = nil }
        }
        connection.channel.whenSuccess { $0.close(promise: nil) }
    }
}

/// What to do with a reply that arrives after its caller stopped waiting.
struct AbandonedReplyHandler: Sendable {
    let handle: @Sendable ([String: JSONValue], any Channel) -> Void
}

