import BatonProtocol
import NIOCore

// The client's channel handlers. They are written here, not taken from swift-nio-extras
// (as the server's line decoder is), so that an app depending on BatonClient alone
// resolves and builds swift-nio and nothing of the server's dependency graph.

/// A request line on its way out, with the id its reply will carry.
struct OutgoingRequest: Sendable {
    var requestID: Int64
    var line: String
}

/// A reply line, parsed, with the id of the request it answers.
struct IncomingReply: Sendable {
    var requestID: Int64
    var fields: [String: JSONValue]
}

/// Writes request lines.
final class RequestEncoder: ChannelOutboundHandler {
    typealias OutboundIn = OutgoingRequest
    typealias OutboundOut = ByteBuffer

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = self.unwrapOutboundIn(data)
        var buffer = context.channel.allocator.buffer(capacity: request.line.utf8.count + 1)
        buffer.writeString(request.line)
        buffer.writeInteger(UInt8(ascii: "\n"))
        context.write(self.wrapOutboundOut(buffer), promise: promise)
    }
}

/// Parses reply lines; a line that is not a reply to one of ours is an error on the connection.
final class ReplyDecoder: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = IncomingReply

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let line = self.unwrapInboundIn(data)
        do {
            let value = try line.withUnsafeReadableBytes { raw throws(JSONParser.Failure) in
                try JSONParser.parse(raw.bindMemory(to: UInt8.self), maximumDepth: 512)
            }
            guard case .object(let fields) = value, case .integer(let id)? = fields["id"] else {
                throw BatonConnectionError(.protocolViolation, "a reply without one of this client's ids: \(String(buffer: line).prefix(200))")
            }
            context.fireChannelRead(self.wrapInboundOut(IncomingReply(requestID: id, fields: fields)))
        } catch let error as BatonConnectionError {
            context.fireErrorCaught(error)
        } catch {
            context.fireErrorCaught(BatonConnectionError(.protocolViolation, "a reply that is not JSON: \(error)"))
        }
    }
}

/// Splits what batond sends into lines, without their newlines.
struct ReplyLineDecoder: ByteToMessageDecoder {
    typealias InboundOut = ByteBuffer

    /// How much of the buffer is known to hold no newline, so a long line is scanned once.
    private var scanned = 0

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        let bytes = buffer.readableBytesView
        guard let newline = bytes.dropFirst(self.scanned).firstIndex(of: UInt8(ascii: "\n")) else {
            self.scanned = bytes.count
            return .needMoreData
        }
        self.scanned = 0
        let line = buffer.readSlice(length: newline - bytes.startIndex)!
        buffer.moveReaderIndex(forwardBy: 1)
        context.fireChannelRead(Self.wrapInboundOut(line))
        return .continue
    }

    mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        // A last line without its newline is not a whole reply: the requests waiting for it
        // fail as the connection closes.
        while try self.decode(context: context, buffer: &buffer) == .continue {}
        return .needMoreData
    }
}

/// Matches each reply to the request waiting for it, by id, so that many requests share
/// one connection in any order. A reply to no waiting request, or any error on the
/// connection, fails every waiting request and closes the connection.
final class ReplyRouter: ChannelDuplexHandler {
    typealias InboundIn = IncomingReply
    typealias OutboundIn = (OutgoingRequest, EventLoopPromise<IncomingReply>)
    typealias OutboundOut = OutgoingRequest

    private var waiting: [Int64: EventLoopPromise<IncomingReply>] = [:]
    /// Set once the connection failed: later requests fail at once.
    private var failure: (any Error)?

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let (request, reply) = self.unwrapOutboundIn(data)
        if let failure = self.failure {
            reply.fail(failure)
            promise?.fail(failure)
            return
        }
        self.waiting[request.requestID] = reply
        context.write(self.wrapOutboundOut(request), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let reply = self.unwrapInboundIn(data)
        guard let waiter = self.waiting.removeValue(forKey: reply.requestID) else {
            self.errorCaught(
                context: context, error: BatonConnectionError(.protocolViolation, "a reply to no request of this client: id \(reply.requestID)")
            )
            return
        }
        waiter.succeed(reply)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.failAll(error)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.failAll(BatonConnectionError(.closed, "the connection closed before batond answered"))
        context.fireChannelInactive()
    }

    private func failAll(_ error: any Error) {
        if self.failure == nil { self.failure = error }
        let waiting = self.waiting
        self.waiting = [:]
        for waiter in waiting.values { waiter.fail(error) }
    }
}
