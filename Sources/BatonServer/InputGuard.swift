import BatonProtocol
import NIOCore
import Synchronization

/// How many bytes of unfinished request lines all connections together may hold.
///
/// A line is buffered until its newline arrives, so without a bound 1,000 connections each
/// holding 1 MB of an unfinished line pinned a gigabyte. Each connection reserves what it
/// holds; a read that would take the total past the budget closes that connection.
final class InputBudget: Sendable {
    let limit: Int
    private let used = Atomic<Int>(0)

    init(limit: Int) {
        self.limit = limit
    }

    /// Takes `bytes` from the budget, or nothing and `false` when they do not fit.
    func reserve(_ bytes: Int) -> Bool {
        let total = self.used.add(bytes, ordering: .relaxed).newValue
        guard total <= self.limit else {
            self.used.subtract(bytes, ordering: .relaxed)
            return false
        }
        return true
    }

    func release(_ bytes: Int) {
        self.used.subtract(bytes, ordering: .relaxed)
    }

    /// The bytes held now.
    var inUse: Int { self.used.load(ordering: .relaxed) }
}

/// Sits before the line framer and bounds the unfinished line a connection holds: in size,
/// against the server-wide ``InputBudget``, and in time.
///
/// A client that starts a line and never ends it (a stuck writer, a slow-loris) is answered
/// with `bad_request` and disconnected once the line has been unfinished for the timeout;
/// complete lines, however slow the client between them, are never timed.
final class InputGuard: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let budget: InputBudget
    private let timeout: TimeAmount
    /// Bytes after the last newline: the unfinished line, as reserved from the budget.
    private var pending = 0
    private var timer: Scheduled<Void>?
    private var closing = false

    init(budget: InputBudget, timeoutMilliseconds: Int64) {
        self.budget = budget
        self.timeout = .milliseconds(timeoutMilliseconds)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !self.closing else { return }
        let buffer = self.unwrapInboundIn(data)
        let view = buffer.readableBytesView
        let unfinished: Int
        let finishedALine: Bool
        if let newline = view.lastIndex(of: UInt8(ascii: "\n")) {
            unfinished = view.endIndex - newline - 1
            finishedALine = true
        } else {
            unfinished = self.pending + view.count
            finishedALine = false
        }
        let growth = unfinished - self.pending
        if growth > 0, !self.budget.reserve(growth) {
            return self.refuse(
                context: context, code: .tooLarge,
                "batond's input buffers are full (\(self.budget.limit) bytes across all connections); the connection is closed"
            )
        }
        if growth < 0 { self.budget.release(-growth) }
        self.pending = unfinished
        if self.pending == 0 {
            self.timer?.cancel()
            self.timer = nil
        } else if finishedALine || self.timer == nil {
            // A new line began: it has the whole timeout to finish.
            self.timer?.cancel()
            self.timer = context.eventLoop.assumeIsolated().scheduleTask(in: self.timeout) { [timeout] in
                self.timer = nil
                self.refuse(
                    context: context, code: .badRequest,
                    "a line stayed unfinished for \(timeout.nanoseconds / 1_000_000) ms; the connection is closed"
                )
            }
        }
        context.fireChannelRead(data)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.timer?.cancel()
        self.timer = nil
        self.budget.release(self.pending)
        self.pending = 0
    }

    /// Answers with `code`, then closes: the unfinished line is dropped, replies to the
    /// complete lines before it have already been handed to the authority.
    private func refuse(context: ChannelHandlerContext, code: BatonError.Code, _ message: String) {
        guard !self.closing else { return }
        self.closing = true
        let line = Reply.failure(id: nil, BatonError(code, message))
        context.writeAndFlush(NIOAny(context.channel.allocator.buffer(bytes: line)), promise: nil)
        context.close(promise: nil)
    }
}
