import BatonProtocol
import NIOCore
import NIOExtras

/// A request line on its way out, with the id its reply will carry.
struct OutgoingRequest: NIORequestIdentifiable, Sendable {
    var requestID: Int64
    var line: String
}

/// A reply line, parsed, with the id of the request it answers.
struct IncomingReply: NIORequestIdentifiable, Sendable {
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
