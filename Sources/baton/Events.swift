import ArgumentParser
import BatonClient
import BatonProtocol
import Foundation

struct Events: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show a job's audit trail: every state change, oldest first.")

    @OptionGroup var connection: ConnectionOptions

    @Argument(help: "The job's id.")
    var job: Int64

    func run() async throws {
        let events = try await self.connection.withClient { client in try await client.events(of: self.job) }
        for event in events {
            if self.connection.json {
                var writer = JSONWriter()
                writer.beginObject()
                writer.member("event", event.event)
                writer.member("at", event.at)
                writer.member("state", event.state.rawValue)
                writer.member("token", optional: event.token)
                writer.member("peer_pid", optional: event.peerPID)
                writer.member("detail", optional: event.detail)
                writer.member("parent", optional: event.parent)
                if !event.followUps.isEmpty {
                    writer.key("follow_ups")
                    writer.beginArray()
                    for job in event.followUps { writer.integer(job) }
                    writer.endArray()
                }
                writer.endObject()
                print(writer.text)
                continue
            }
            var line = "\(Self.timestamp(event.at))  \(event.event.padding(12))  → \(event.state.rawValue.padding(9))"
            if let token = event.token { line += "  token \(token)" }
            if let pid = event.peerPID { line += "  pid \(pid)" }
            if let detail = event.detail { line += "  \(detail)" }
            if let parent = event.parent { line += "  follow-up of \(parent)" }
            if !event.followUps.isEmpty { line += "  follow-ups " + event.followUps.map(String.init).joined(separator: ", ") }
            print(line)
        }
    }

    private static func timestamp(_ milliseconds: Int64) -> String {
        let date = Date(timeIntervalSince1970: Double(milliseconds) / 1_000)
        return date.formatted(.iso8601.year().month().day().time(includingFractionalSeconds: true))
    }
}

extension String {
    fileprivate func padding(_ length: Int) -> String {
        self.count >= length ? self : self + String(repeating: " ", count: length - self.count)
    }
}
