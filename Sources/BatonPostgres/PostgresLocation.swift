import Foundation
import PostgresNIO

/// Where a PostgreSQL store is, as `batond --store` names it:
/// `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE`, or `postgresql://…`.
///
/// `?host=/DIR` reaches the server through its unix socket in `DIR` instead of TCP
/// (`DIR/.s.PGSQL.PORT`, as libpq names it). `?sslmode=disable` or `require` chooses TLS;
/// the default is `prefer`.
public struct PostgresLocation: Hashable, Sendable, CustomStringConvertible {
    public var user: String
    public var password: String?
    /// A host name or address, or the directory of the server's unix socket.
    public var host: String
    public var port: Int
    public var database: String
    public var tls: TLSMode

    public enum TLSMode: String, Hashable, Sendable {
        case disable, prefer, require
    }

    /// Whether `argument` names a PostgreSQL store rather than a SQLite file.
    public static func isLocation(_ argument: String) -> Bool {
        argument.hasPrefix("postgres://") || argument.hasPrefix("postgresql://")
    }

    /// Reads a `postgres://` URL; the error says what is wrong with it.
    public init(_ url: String) throws {
        guard Self.isLocation(url), let components = URLComponents(string: url) else {
            throw PostgresLocationError("\(Self.redacted(url)) is not a postgres:// URL")
        }
        guard let user = components.user, !user.isEmpty else {
            throw PostgresLocationError("\(Self.redacted(url)) names no user: postgres://USER@HOST/DATABASE")
        }
        let database = String(components.path.drop { $0 == "/" })
        guard !database.isEmpty, !database.contains("/") else {
            throw PostgresLocationError("\(Self.redacted(url)) names no database: postgres://USER@HOST/DATABASE")
        }
        var host = components.host ?? ""
        var tls = TLSMode.prefer
        for item in components.queryItems ?? [] {
            switch (item.name, item.value) {
            case ("host", let value?) where value.hasPrefix("/"):
                host = value
            case ("sslmode", let value?):
                guard let mode = TLSMode(rawValue: value) else {
                    throw PostgresLocationError("sslmode must be disable, prefer or require, not \(value)")
                }
                tls = mode
            default:
                throw PostgresLocationError("\(Self.redacted(url)): unknown parameter \(item.name)")
            }
        }
        guard !host.isEmpty else {
            throw PostgresLocationError("\(Self.redacted(url)) names no host: postgres://USER@HOST/DATABASE or ?host=/SOCKET_DIR")
        }
        self.user = user
        self.password = components.password
        self.host = host
        self.port = components.port ?? 5432
        self.database = database
        self.tls = tls
    }

    /// The URL with its password hidden, for logs and errors.
    public var description: String {
        let credentials = self.password == nil ? self.user : "\(self.user):***"
        if self.host.hasPrefix("/") {
            return "postgres://\(credentials)@:\(self.port)/\(self.database)?host=\(self.host)"
        }
        return "postgres://\(credentials)@\(self.host):\(self.port)/\(self.database)"
    }

    /// The client configuration PostgresNIO connects with.
    var configuration: PostgresClient.Configuration {
        var configuration = self.serverConfiguration
        // Every statement batond sends walks an index in its order, and reads only as far as
        // it needs: a claim takes the first ready jobs of the claim index, a completion finds
        // each job by its key. A scan of the whole table, or a bitmap scan that reads every
        // match and sorts, is never the plan for a table that grows, but the planner picks
        // one while the table is small, and a prepared statement keeps the plan it settled
        // on after a few runs (a fresh database's) however large the table grows.
        configuration.options.additionalStartupParameters = [("enable_seqscan", "off"), ("enable_bitmapscan", "off")]
        return configuration
    }

    private var serverConfiguration: PostgresClient.Configuration {
        if self.host.hasPrefix("/") {
            return PostgresClient.Configuration(
                unixSocketPath: "\(self.host)/.s.PGSQL.\(self.port)", username: self.user,
                password: self.password, database: self.database
            )
        }
        let tls: PostgresClient.Configuration.TLS =
            switch self.tls {
            case .disable: .disable
            case .prefer: .prefer(.makeClientConfiguration())
            case .require: .require(.makeClientConfiguration())
            }
        return PostgresClient.Configuration(
            host: self.host, port: self.port, username: self.user, password: self.password,
            database: self.database, tls: tls
        )
    }

    /// `url` with any password replaced, for messages about a URL that did not parse.
    static func redacted(_ url: String) -> String {
        guard var components = URLComponents(string: url), components.password != nil else { return url }
        components.password = "***"
        return components.string ?? url
    }
}

/// A `postgres://` URL that cannot be used.
public struct PostgresLocationError: Error, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}
