/// How long finished jobs are kept before they are deleted, and how the deleting is paced.
public struct RetentionPolicy: Hashable, Sendable {
    /// How long a completed job is kept after it finished, in milliseconds.
    public var completedMilliseconds: Int64
    /// How long a failed or cancelled job is kept: longer, since someone may want to read why.
    public var failedMilliseconds: Int64
    /// Jobs deleted per commit, so that pruning never holds up claims for long.
    public var batchSize: Int
    /// How often to look for jobs to prune when the last look found few.
    public var intervalMilliseconds: Int64

    /// The defaults: completed jobs for 7 days, failed and cancelled ones for 30.
    public init(
        completedMilliseconds: Int64 = 7 * 86_400_000,
        failedMilliseconds: Int64 = 30 * 86_400_000,
        batchSize: Int = 500,
        intervalMilliseconds: Int64 = 60_000
    ) {
        self.completedMilliseconds = completedMilliseconds
        self.failedMilliseconds = failedMilliseconds
        self.batchSize = batchSize
        self.intervalMilliseconds = intervalMilliseconds
    }
}
