import BatonCore
import Logging
import NIOConcurrencyHelpers
import PostgresNIO

/// A job store in PostgreSQL, which the `batond` of many hosts share.
///
/// Everything that must agree between hosts lives in the database: job ids and fencing
/// tokens come from its sequences, lease deadlines from its clock, and a claim takes a
/// ready job with `FOR UPDATE SKIP LOCKED`, so two hosts never lease one job and never
/// wait on each other's claims.
public final class PostgresStore: @unchecked Sendable {
    // @unchecked: `durability` is set once, in `open`, before the store is shared.
    public let location: PostgresLocation
    /// What a commit survives, as `hello` reports it: `full` when PostgreSQL waits for its
    /// WAL to reach the disk before a commit returns (`synchronous_commit` on, the default),
    /// `normal` when it does not (`off`: a crash of the database may lose the last commits).
    public private(set) var durability = "full"
    let client: PostgresClient
    let logger: Logger
    private let loopExecutor: EventLoopTaskExecutor
    /// Runs tasks on the loop of the store's connections; a caller's tasks that run
    /// transactions should prefer it too.
    public var executor: any TaskExecutor { self.loopExecutor }
    /// The loop of the store's connections, which also keeps its timers.
    var loop: any EventLoop { self.loopExecutor.loop }
    /// Runs the client's connection pool until the store is closed.
    private let pool: Task<Void, Never>

    private init(
        location: PostgresLocation, logger: Logger, client: PostgresClient, executor: EventLoopTaskExecutor, pool: Task<Void, Never>
    ) {
        self.location = location
        self.logger = logger
        self.client = client
        self.loopExecutor = executor
        self.pool = pool
    }

    /// Starts the client's pool in a task, and returns once it is running: a connection
    /// asked for before then would still come, but with a warning in the log.
    ///
    /// The task is detached: a client's `run` also ends at a graceful shutdown of the
    /// service group it finds itself in, and the pool must outlive batond's drain, whose
    /// last batches still commit. ``close()`` ends it.
    static func run(_ client: PostgresClient) async -> Task<Void, Never> {
        let started = NIOLockedValueBox(false)
        let pool = Task.detached {
            started.withLockedValue { $0 = true }
            await client.run()
        }
        while !started.withLockedValue({ $0 }) {
            await Task.yield()
        }
        return pool
    }

    /// Connects to the database and brings its schema up to date. Every connection lives on
    /// `loop` (by default one of NIO's shared loops), and tasks that prefer ``executor`` run
    /// there too.
    public static func open(
        _ location: PostgresLocation, on loop: any EventLoop = MultiThreadedEventLoopGroup.singleton.any(), logger: Logger
    ) async throws -> PostgresStore {
        let client = PostgresClient(configuration: location.configuration, eventLoopGroup: loop, backgroundLogger: logger)
        let store = PostgresStore(
            location: location, logger: logger, client: client, executor: EventLoopTaskExecutor(loop), pool: await Self.run(client))
        do {
            let applied = try await PostgresSchema.migrate(store.client, logger: logger)
            if applied > 0 {
                logger.notice("migrated the PostgreSQL store", metadata: ["migrations": "\(applied)", "store": "\(location)"])
            }
            let synchronous = try await store.client.query("SHOW synchronous_commit", logger: logger).first(String.self)
            store.durability = synchronous == "off" ? "normal" : "full"
        } catch {
            await store.close()
            throw error
        }
        return store
    }

    /// Closes every connection.
    public func close() async {
        self.pool.cancel()
        await self.pool.value
    }

    /// Runs `body` in one transaction, committed when it returns and rolled back when it throws.
    ///
    /// An error `body` throws is rethrown as it is once the transaction has rolled back.
    @discardableResult
    public func write<Result: Sendable>(_ body: (PostgresTransaction) async throws -> Result) async throws -> Result {
        do {
            return try await self.client.withTransaction(logger: self.logger) { connection in
                try await body(PostgresTransaction(connection: connection, logger: self.logger))
            }
        } catch let error as PostgresTransactionError {
            if let thrown = error.closureError, error.rollbackError == nil {
                throw thrown
            }
            throw error
        }
    }

    /// Runs `body` in one transaction as ``write(_:)`` does, but gives up after `timeout`:
    /// while the database is unreachable, the pool would otherwise wait for a connection
    /// for a minute, and a transaction on a connection the server dropped may never end.
    ///
    /// Giving up cancels the transaction and returns at once, without waiting for it to
    /// wind down: `body` must not touch anything the caller goes on to change. A
    /// transaction given up on rolls back when its body returns, unless its COMMIT had
    /// already been sent, which no client can tell apart; the caller must say so.
    ///
    /// - Throws: ``PostgresUnavailable`` when the time ran out or the database could not
    ///   be reached, and whatever `body` threw otherwise.
    @discardableResult
    public func write<Value: Sendable>(
        timeout: Duration, _ body: @escaping @Sendable (PostgresTransaction) async throws -> Value
    ) async throws -> Value {
        let waiting = NIOLockedValueBox<CheckedContinuation<Value, any Error>?>(nil)
        let finish = { @Sendable (result: Result<Value, any Error>) in
            waiting.withLockedValue { continuation in
                defer { continuation = nil }
                return continuation
            }?.resume(with: result)
        }
        return try await withCheckedThrowingContinuation { continuation in
            waiting.withLockedValue { $0 = continuation }
            let timer = NIOLockedValueBox<Scheduled<Void>?>(nil)
            let work = Task(executorPreference: self.executor) {
                do {
                    let value = try await self.write { tx in
                        let value = try await body(tx)
                        // Given up on while it ran: roll back rather than commit what the
                        // caller was told did not happen.
                        try Task.checkCancellation()
                        return value
                    }
                    finish(.success(value))
                } catch let error where Self.isUnreachable(error) {
                    finish(.failure(PostgresUnavailable("\(self.location) is unreachable: \(error)")))
                } catch {
                    finish(.failure(error))
                }
                timer.withLockedValue { $0 }?.cancel()
            }
            let (seconds, attoseconds) = timeout.components
            timer.withLockedValue { timer in
                timer = self.loop.scheduleTask(in: .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)) {
                    work.cancel()
                    finish(.failure(PostgresUnavailable("no answer from \(self.location) within \(timeout)")))
                }
            }
        }
    }

    /// Whether `error` is PostgreSQL giving up on a transaction that ran into another (a
    /// deadlock, or a serialization failure): rolled back whole, it may simply run again.
    public static func isConflict(_ error: any Error) -> Bool {
        guard let error = error as? PSQLError, let state = error.serverInfo?[.sqlState] else { return false }
        return state == "40P01" || state == "40001"
    }

    /// Whether `error` says the database could not be reached or the connection was lost,
    /// as opposed to a statement that failed.
    static func isUnreachable(_ error: any Error) -> Bool {
        switch error {
        case let error as PSQLError:
            return [.connectionError, .serverClosedConnection, .clientClosedConnection, .uncleanShutdown, .poolClosed]
                .contains(error.code)
        case is ChannelError, is IOError, is NIOConnectionError:
            return true
        case let error as PostgresTransactionError:
            return [error.beginError, error.closureError, error.commitError].contains { $0.map(Self.isUnreachable) ?? false }
        default:
            return false
        }
    }

    /// The channel that tells every host which queues gained ready jobs.
    static let readyChannel = "baton_ready"
    /// The channel that tells every host which named limits gave places back.
    static let limitChannel = "baton_limit_freed"

    /// What a host hears from the others (and itself) that may let a parked claim through.
    public enum Wakeup: Hashable, Sendable {
        /// Jobs became ready in a queue.
        case ready(queue: String)
        /// A job naming a limit stopped running, or the limit's settings changed.
        case limitFreed(String)
    }

    /// Calls `wake` with each wake-up some host's commit announced (see
    /// ``announce(readyQueues:freedLimits:)``), until the task is cancelled or the
    /// connection is lost (it throws then; the caller listens again, and in the meantime
    /// its parked claims fall back to their slow look).
    ///
    /// - Parameter listening: called once the connection listens: nothing announced after
    ///   that is missed.
    public func listenForWakeups(listening: @Sendable () -> Void = {}, _ wake: @escaping @Sendable (Wakeup) -> Void) async throws {
        try await self.client.withConnection { connection in
            try await connection.listen(on: Self.readyChannel) { ready in
                try await connection.listen(on: Self.limitChannel) { freed in
                    listening()
                    try await withThrowingTaskGroup(of: Void.self) { group in
                        group.addTask { for try await notification in ready { wake(.ready(queue: notification.payload)) } }
                        group.addTask { for try await notification in freed { wake(.limitFreed(notification.payload)) } }
                        // Either ends only when the connection does: then both are done.
                        try await group.next()
                        group.cancelAll()
                    }
                }
            }
        }
    }

    /// Tells every host's listener that `readyQueues` gained ready jobs and `freedLimits`
    /// gave places back, outside any transaction: for changes already committed.
    ///
    /// PostgreSQL serializes the commits of transactions that notify, fsync included, across
    /// the whole server; a batch that notified in its own transaction would stop every other
    /// host's commits from sharing a flush. Notified after the commit, a wake-up costs one
    /// small statement off the batch's path. Its own commit does not wait for the disk
    /// (`synchronous_commit` off for it alone): a notification does not outlive a crash of
    /// the database anyway, and a lost one only leaves parked claims to their slow look.
    public func announce(readyQueues: Set<String>, freedLimits: Set<String> = []) async throws {
        guard !readyQueues.isEmpty || !freedLimits.isEmpty else { return }
        try await self.client.query(
            """
            SELECT pg_notify(w.channel, w.payload)
            FROM set_config('synchronous_commit', 'off', true),
                (SELECT \(Self.readyChannel)::text, unnest(\(Array(readyQueues))::text[])
                 UNION ALL SELECT \(Self.limitChannel)::text, unnest(\(Array(freedLimits))::text[])) AS w(channel, payload)
            """, logger: self.logger)
    }

    /// The schema versions applied to the database, oldest first.
    public func schemaVersions() async throws -> [Int] {
        var versions: [Int] = []
        for try await version in try await self.client.query("SELECT version FROM baton_schema ORDER BY version", logger: self.logger)
            .decode(Int.self)
        {
            versions.append(version)
        }
        return versions
    }
}

/// The database cannot be reached now: nothing of the transaction was committed, unless
/// the connection was lost after its COMMIT was sent, which no client can tell apart.
public struct PostgresUnavailable: Error, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}

/// Something the PostgreSQL store cannot do, in words for the log.
public struct PostgresStoreError: Error, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}
