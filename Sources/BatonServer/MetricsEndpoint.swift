import Dispatch
import NIOCore
import NIOHTTP1
import NIOPosix

/// Serves `GET /metrics` in Prometheus's text format, for a stock Prometheus to scrape.
///
/// Off unless `--metrics-listen` names an address. Each scrape goes through the
/// authority, which first sets the job-count gauges from the store, so a scrape reads the
/// same numbers as the `metrics` op.
final class MetricsEndpoint {
    private let channel: any Channel

    private init(channel: any Channel) {
        self.channel = channel
    }

    static func start(
        host: String, port: Int, group: any EventLoopGroup, scrape: @escaping @Sendable () -> EventLoopFuture<MetricsSnapshot>
    ) async throws -> MetricsEndpoint {
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.pipeline.configureHTTPServerPipeline().flatMapThrowing {
                    try channel.pipeline.syncOperations.addHandler(MetricsRequestHandler(scrape: scrape))
                }
            }
            .bind(host: host, port: port).get()
        return MetricsEndpoint(channel: channel)
    }

    /// The address it listens on (with the port the kernel chose, when asked for port 0).
    var localAddress: SocketAddress? { self.channel.localAddress }

    func close() async {
        try? await self.channel.close()
    }
}

private final class MetricsRequestHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let scrape: @Sendable () -> EventLoopFuture<MetricsSnapshot>
    /// Where the text is written: it grows with the queues, and this loop serves clients.
    private static let renderQueue = DispatchQueue(label: "batond.metrics")
    private var head: HTTPRequestHead?

    init(scrape: @escaping @Sendable () -> EventLoopFuture<MetricsSnapshot>) {
        self.scrape = scrape
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
        case .body:
            break
        case .end:
            guard let head = self.head else { return }
            self.head = nil
            let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
            guard head.method == .GET || head.method == .HEAD, path == "/metrics" else {
                return self.respond(context: context, head: head, status: .notFound, body: "not found: try GET /metrics\n")
            }
            let rendered = context.eventLoop.makePromise(of: String.self)
            self.scrape().whenComplete { result in
                switch result {
                case .success(let snapshot): Self.renderQueue.async { rendered.succeed(snapshot.prometheusText()) }
                case .failure(let error): rendered.fail(error)
                }
            }
            rendered.futureResult.assumeIsolated().whenComplete { result in
                switch result {
                case .success(let text):
                    self.respond(context: context, head: head, status: .ok, body: text)
                case .failure(let error):
                    self.respond(context: context, head: head, status: .serviceUnavailable, body: "batond cannot read its metrics: \(error)\n")
                }
            }
        }
    }

    private func respond(context: ChannelHandlerContext, head: HTTPRequestHead, status: HTTPResponseStatus, body: String) {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "text/plain; version=0.0.4; charset=utf-8")
        headers.add(name: "Content-Length", value: "\(body.utf8.count)")
        if !head.isKeepAlive { headers.add(name: "Connection", value: "close") }
        context.write(self.wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
        if head.method != .HEAD {
            context.write(self.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: body)))), promise: nil)
        }
        let keepAlive = head.isKeepAlive
        context.writeAndFlush(self.wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
            if !keepAlive { context.close(promise: nil) }
        }
    }
}
