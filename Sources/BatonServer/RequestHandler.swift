import BatonCore
import BatonProtocol
import DequeModule
import Dispatch
import Logging
import NIOCore
import NIOExtras

/// Serves one connection: decodes each line, hands it to the authority, writes the reply.
///
/// Decoding happens here, on the connection's event loop, so a malformed line is answered
/// without ever reaching the authority. Replies carry their request's `id`; a parked claim
/// may be answered after requests sent behind it.
final class RequestHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let authority: any JobAuthority
    private let decoder: RequestDecoder
    private let connection: ConnectionIdentity
    /// The peer's process, to end its leases at once should it exit; owned by this handler,
    /// which closes it (or hands it to the exit watch) when the connection closes.
    private let process: PeerProcess?
    /// Whether the connection sent a request that takes or renews a lease: only then is
    /// its process watched when it closes.
    private var mayHoldLeases = false
    private let logger: Logger
    /// Requests handed to the authority and not yet answered.
    private var inFlight = 0
    /// Past this many unanswered requests the connection stops reading, so one client
    /// that floods or never reads cannot make the server buffer without bound.
    private let maximumInFlight: Int
    private var readPending = false
    /// Requests decoded from the current read, handed to the authority together.
    private var decoded: [Submission] = []
    /// Whether a flush of written replies is already queued on the event loop.
    private var flushQueued = false
    /// Set when the server is stopping or the client has finished sending: close as soon
    /// as nothing is left to answer.
    private var closeWhenAnswered = false
    /// Set once a line over the limit was refused: nothing more is read from this client.
    private var hangingUp = false
    private var context: ChannelHandlerContext?
    /// Set while a large reply is being written off the event loop; the outcomes that come
    /// meanwhile wait here, so replies still leave in order.
    private var rendering = false
    private var held = Deque<Outcome>()
    /// Where large replies (the metrics of thousands of queues) are written, so that neither
    /// the authority nor this connection's event loop, which serves other clients, waits.
    private static let renderQueue = DispatchQueue(label: "batond.replies")

    init(
        authority: any JobAuthority, decoder: RequestDecoder, connection: ConnectionIdentity, process: PeerProcess?,
        maximumInFlight: Int, logger: Logger
    ) {
        self.authority = authority
        self.decoder = decoder
        self.connection = connection
        self.process = process
        self.maximumInFlight = maximumInFlight
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.submitDecoded()
        self.authority.connectionClosed(self.connection)
        if let process = self.process {
            if self.mayHoldLeases {
                let (authority, connection) = (self.authority, self.connection)
                process.watchExit(on: context.eventLoop) { authority.processExited(connection) }
            } else {
                process.close()
            }
        }
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !self.hangingUp else { return }
        let line = self.unwrapInboundIn(data)
        // The framer's buffer limit only trips on a line still incomplete after a read; a
        // longer line that arrives whole in one read is caught here.
        guard line.readableBytes <= self.decoder.limits.maximumLineBytes else {
            return self.refuseOversizedLine(context: context)
        }
        let decoded = line.withUnsafeReadableBytes { raw in
            Result { () throws(RequestDecoder.Rejection) in
                try self.decoder.decode(raw.bindMemory(to: UInt8.self))
            }
        }
        switch decoded {
        case .success(let request):
            self.inFlight += 1
            self.mayHoldLeases = self.mayHoldLeases || request.request.mayTakeLease
            let promise = context.eventLoop.makePromise(of: Outcome.self)
            promise.futureResult.assumeIsolated().whenSuccess { outcome in
                self.deliver(outcome)
            }
            self.decoded.append(
                Submission(
                    id: request.id, request: request.request, connection: self.connection, reply: promise,
                    receivedAt: self.authority.clock.monotonicMilliseconds()
                )
            )
        case .failure(let rejection):
            self.write(Reply.failure(id: rejection.id, rejection.error), to: context)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event {
        case is ChannelShouldQuiesceEvent, ChannelEvent.inputClosed:
            // A client that half-closes (`echo … | socat - UNIX-CONNECT:…`) still gets
            // every reply; the connection closes once the last one is written.
            self.closeWhenAnswered = true
            self.submitDecoded()
            if self.inFlight == 0 {
                context.flush()
                context.close(promise: nil)
            }
        default:
            context.fireUserInboundEventTriggered(event)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        self.submitDecoded()
        context.fireChannelReadComplete()
    }

    /// Hands the requests decoded so far to the authority; each must be answered, so none
    /// may be left behind, whatever ends the read.
    private func submitDecoded() {
        guard !self.decoded.isEmpty else { return }
        self.authority.submit(self.decoded)
        self.decoded.removeAll(keepingCapacity: true)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.submitDecoded()
        switch error {
        case is ByteToMessageDecoderError.PayloadTooLargeError:
            self.refuseOversizedLine(context: context)
        case is NIOExtrasErrors.LeftOverBytesError:
            // The client stopped sending in the middle of a line: that line has no answer,
            // but replies already written still go out.
            context.flush()
            context.close(promise: nil)
        default:
            self.logger.debug("connection error", metadata: ["error": "\(error)", "peer.pid": "\(self.connection.peer?.pid ?? 0)"])
            context.close(promise: nil)
        }
    }

    /// The rest of an oversized line cannot be skipped reliably: answer, then hang up.
    /// Requests read before it are still answered before the connection closes.
    private func refuseOversizedLine(context: ChannelHandlerContext) {
        guard !self.hangingUp else { return }
        self.hangingUp = true
        self.submitDecoded()
        let message = "line longer than \(self.decoder.limits.maximumLineBytes) bytes; the connection is closed"
        self.write(Reply.failure(id: nil, BatonError(.badRequest, message)), to: context)
        self.closeWhenAnswered = true
        if self.inFlight == 0 {
            context.flush()
            context.close(promise: nil)
        }
    }

    func read(context: ChannelHandlerContext) {
        if self.hangingUp {
            return
        } else if self.inFlight >= self.maximumInFlight {
            self.readPending = true
        } else {
            context.read()
        }
    }

    private func deliver(_ outcome: Outcome) {
        if self.rendering {
            return self.held.append(outcome)
        }
        guard let render = outcome.render, let context = self.context else {
            return self.deliverLine(outcome)
        }
        self.rendering = true
        let rendered = context.eventLoop.makePromise(of: [UInt8].self)
        Self.renderQueue.async { rendered.succeed(render()) }
        rendered.futureResult.assumeIsolated().whenSuccess { line in
            self.rendering = false
            self.deliverLine(Outcome(line: line, granted: outcome.granted))
            while !self.rendering, let next = self.held.popFirst() {
                self.deliver(next)
            }
        }
    }

    private func deliverLine(_ outcome: Outcome) {
        self.inFlight -= 1
        guard let context = self.context, context.channel.isActive else {
            // Nobody to tell: a lease granted to a vanished client goes straight back, and
            // the claim that won it may have listed the connection as a worker again.
            if let granted = outcome.granted {
                self.releaseUndelivered(granted)
                self.authority.connectionClosed(self.connection)
            }
            return
        }
        if !outcome.line.isEmpty {
            self.write(outcome.line, to: context)
        }
        if self.closeWhenAnswered, self.inFlight == 0 {
            context.flush()
            context.close(promise: nil)
            return
        }
        if self.readPending, self.inFlight < self.maximumInFlight {
            self.readPending = false
            context.read()
        }
    }

    /// Writes a reply. The last reply the connection is waiting for is flushed at once;
    /// while more are due, the flush waits until the replies that reached this event loop
    /// together are written: one system call for a batch, not one per reply.
    private func write(_ line: [UInt8], to context: ChannelHandlerContext) {
        let buffer = context.channel.allocator.buffer(bytes: line)
        context.write(self.wrapOutboundOut(buffer), promise: nil)
        if self.inFlight == 0 {
            context.flush()
            return
        }
        guard !self.flushQueued else { return }
        self.flushQueued = true
        context.eventLoop.assumeIsolated().execute {
            self.flushQueued = false
            if let context = self.context { context.flush() }
        }
    }

    private func releaseUndelivered(_ lease: LeaseReference) {
        self.logger.info("releasing a lease its client never received", metadata: ["job.id": "\(lease.jobID)", "lease.token": "\(lease.token)"])
        let eventLoop = self.authority.loop
        let promise = eventLoop.makePromise(of: Outcome.self)
        promise.futureResult.whenComplete { _ in }
        self.authority.submit([
            Submission(
                id: nil, request: .release(ReleaseRequest(lease: lease, delayMilliseconds: 0)),
                connection: self.connection, reply: promise, receivedAt: self.authority.clock.monotonicMilliseconds()
            )
        ])
    }
}

extension Request {
    /// Whether the request may leave its connection holding a lease: a claim, or a renewal.
    fileprivate var mayTakeLease: Bool {
        switch self {
        case .claim, .heartbeat, .checkpoint: true
        case .complete(let request): request.next != nil
        default: false
        }
    }
}
