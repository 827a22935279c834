import ArgumentParser
import BatonClient

struct Cancel: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Cancel an unfinished job; a running one's worker is told at its next heartbeat."
    )

    @OptionGroup var connection: ConnectionOptions

    @Argument(help: "The job's id.")
    var job: Int64

    @Option(help: "Why, stored as the job's last error.")
    var reason: String?

    func run() async throws {
        try await self.connection.withClient { client in try await client.cancel(self.job, reason: self.reason) }
    }
}
