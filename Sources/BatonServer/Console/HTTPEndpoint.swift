import Hummingbird
import Logging
import NIOCore

/// batond's HTTP listener (`--http-listen`): `GET /metrics` in Prometheus's text format
/// for a stock Prometheus to scrape, and, with `--console`, the web console.
///
/// Hummingbird serves it: routing, request bodies and HTTP/1.1 keep-alive are its tested
/// code rather than a hand-written NIOHTTP1 handler, and its handlers run off the event
/// loops that serve the socket's clients, so writing a large page never holds them up.
final class HTTPEndpoint: Sendable {
    /// The address it listens on (with the port the kernel chose, when asked for port 0).
    let localAddress: SocketAddress?
    private let serving: Task<Void, any Error>

    private init(localAddress: SocketAddress?, serving: Task<Void, any Error>) {
        self.localAddress = localAddress
        self.serving = serving
    }

    /// Starts listening, and returns once the address is bound.
    static func start(
        host: String, port: Int, group: any EventLoopGroup, authority: any JobAuthority, console: Console?, logger: Logger
    ) async throws -> HTTPEndpoint {
        let router = Router(context: BasicRequestContext.self)
        router.get("/metrics") { _, _ -> Response in
            // Written here, off the authority's thread and off the socket's event loops.
            let text = try await authority.scrape().get().prometheusText()
            return Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
        }
        console?.register(on: router)
        var quiet = logger
        quiet.logLevel = max(logger.logLevel, .warning)
        let (bound, binding) = AsyncStream.makeStream(of: Result<SocketAddress?, any Error>.self)
        // Bounded, as the socket is: so many connections at once, and none left idle for long.
        let application = Application(
            router: router, server: .http1(configuration: .init(idleTimeout: .seconds(Self.idleSeconds))),
            configuration: ApplicationConfiguration(
                address: .hostname(host, port: port), serverName: nil,
                availableConnectionsDelegate: .maximum(Self.maximumConnections, logger: quiet)
            ),
            onServerRunning: { channel in binding.yield(.success(channel.localAddress)) },
            eventLoopGroupProvider: .shared(group), logger: quiet
        )
        let serving = Task {
            do {
                try await application.run()
                binding.yield(.failure(CancellationError()))
            } catch {
                binding.yield(.failure(error))
                throw error
            }
        }
        for await result in bound {
            switch result {
            case .success(let address): return HTTPEndpoint(localAddress: address, serving: serving)
            case .failure(let error): throw error
            }
        }
        throw CancellationError()
    }

    /// Connections the listener holds at once; more wait in the kernel's backlog.
    static let maximumConnections = 256
    /// How long a connection may sit idle before it is closed.
    static let idleSeconds: Int64 = 60

    func close() async {
        self.serving.cancel()
        _ = try? await self.serving.value
    }
}
