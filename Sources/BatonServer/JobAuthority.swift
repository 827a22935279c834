import BatonProtocol
import NIOCore

/// What the socket server needs of whoever applies requests to the store: the authority.
///
/// The server decodes requests, hands them over and writes back the outcomes; it knows
/// nothing of the store behind. Today the authority is the single writer over SQLite
/// (``Authority``); a store shared by many hosts brings its own.
protocol JobAuthority: AnyObject, Sendable {
    /// The event loop the authority's work runs on.
    var loop: any EventLoop { get }
    /// The clock a request's arrival is read on.
    var clock: any AuthorityClock { get }

    /// Queues requests for the next batch. Safe to call from any thread.
    func submit(_ submissions: [Submission])
    /// Forgets a closed connection's parked claims, and the connection as a worker.
    func connectionClosed(_ connection: ConnectionIdentity)
    /// Ends the leases bound to the process of a closed connection, which has exited
    /// (``LeaseHolders``): nobody is left to finish those jobs.
    func processExited(_ connection: ConnectionIdentity)
    /// Restores what the authority keeps beside the store; the number of running jobs.
    func recover() -> EventLoopFuture<Int>
    /// Stops taking requests, and completes once the last batch has committed.
    func drain() -> EventLoopFuture<Void>
    /// The server's health, judged on the authority's own thread.
    func health() -> EventLoopFuture<HealthReport>
    /// The metrics as of the last commit.
    func scrape() -> EventLoopFuture<MetricsSnapshot>
    /// Closes the store once everything before it on the loop has run.
    func closeStore() -> EventLoopFuture<Void>
}

/// One decoded request on its way to the authority.
struct Submission: Sendable {
    var id: String?
    var request: Request
    var connection: ConnectionIdentity
    var reply: ReplySink
    /// When the connection read the request, on the authority clock's monotonic time.
    var receivedAt: Int64
}
