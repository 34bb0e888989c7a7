import Foundation

/// How many tokens to draft, chosen per sequence and step from what drafting has been
/// worth (each sequence's measured acceptance) and what verifying costs (a model of the
/// forward pass's time against its token count, measured on this machine).
///
/// On a CPU the verify pass is not free: a pass over k + 1 tokens costs about
/// max(weight bytes ÷ bandwidth, (k + 1) × FLOPs ÷ compute), plus whatever the kernels
/// lose to unpacking, so a draft is worth its tokens only when enough of them are kept.
/// With acceptance α per drafted token (a geometric run, as in Leviathan et al.), drafting
/// k yields on average E(k) = (1 − α^(k+1)) / (1 − α) tokens per pass. The step as a whole
/// is planned greedily: it starts with every sequence's own tokens, and each decoding
/// sequence in turn takes the k that most raises the step's tokens per second, so drafting
/// backs off when a full batch already keeps the compute busy.
final class SpeculationPolicy {
    let maxDraft: Int
    /// Seconds of a forward pass of n tokens, n = 1...maxTracked (index 0 unused).
    private(set) var stepSeconds: [Double]
    /// Seconds of a draft model's passes: the first of a draft (one or two tokens in) and
    /// each further one; zero for proposers without a model.
    var draftSeconds: (first: Double, next: Double) = (0, 0)
    private let maxTracked: Int

    /// `calibration`: measured (tokens, seconds) of forward passes, at least one token count.
    init(maxDraft: Int, calibration: [(tokens: Int, seconds: Double)]) {
        precondition(!calibration.isEmpty)
        self.maxDraft = maxDraft
        maxTracked = max(64, maxDraft + 1)
        let points = calibration.sorted { $0.tokens < $1.tokens }
        stepSeconds = [0] + (1...maxTracked).map { Self.interpolate(points, at: $0) }
    }

    /// Straight lines between measured points; beyond the last, its cost per token.
    private static func interpolate(_ points: [(tokens: Int, seconds: Double)], at n: Int) -> Double {
        if n <= points[0].tokens { return points[0].seconds }
        for (a, b) in zip(points, points.dropFirst()) where n <= b.tokens {
            return a.seconds + (b.seconds - a.seconds) * Double(n - a.tokens) / Double(b.tokens - a.tokens)
        }
        let last = points[points.count - 1]
        return last.seconds * Double(n) / Double(last.tokens)
    }

    func cost(tokens n: Int) -> Double {
        n <= maxTracked ? stepSeconds[max(1, n)] : stepSeconds[maxTracked] * Double(n) / Double(maxTracked)
    }

    /// A measured step: the model follows what the machine does now (other load, longer
    /// contexts), one exponentially weighted point at a time.
    func record(tokens n: Int, seconds: Double) {
        guard n >= 1, n <= maxTracked, seconds > 0 else { return }
        stepSeconds[n] = 0.8 * stepSeconds[n] + 0.2 * seconds
    }

    static func expectedTokens(draft k: Int, acceptance α: Double) -> Double {
        α >= 1 ? Double(k + 1) : (1 - pow(α, Double(k + 1))) / (1 - α)
    }

    /// The draft length for one sequence of a step that holds `stepTokens` tokens (this
    /// sequence's own included) and yields `stepOutput` tokens: the k in 0...limit that
    /// most raises the step's output per second.
    func draftLength(acceptance α: Double, limit: Int, stepTokens: Int, stepOutput: Double) -> Int {
        var best = 0, bestRate = stepOutput / cost(tokens: stepTokens)
        for k in stride(from: 1, through: min(limit, maxDraft), by: 1) {
            let seconds = cost(tokens: stepTokens + k) + draftSeconds.first + Double(k - 1) * draftSeconds.next
            let rate = (stepOutput - 1 + Self.expectedTokens(draft: k, acceptance: α)) / seconds
            // A small margin: a draft must pay clearly, since α and the costs are estimates.
            if rate > bestRate * 1.02 { best = k; bestRate = rate }
        }
        return best
    }

    /// How many tokens of a branch to verify (0: none), for a sequence whose chain drafts
    /// `chain` tokens with acceptance α, the branch leaving it after `after` of them with
    /// acceptance β (of a branch's first token, where the chain's was wrong). The walk
    /// reaches the branch's place with probability α^after, finds the chain wrong there
    /// with 1 − α (certainly, past the chain's end), and then keeps the branch's first
    /// token with β and each further one with α. The step holds `stepTokens` and yields
    /// `stepOutput`; the length is the one that most raises its output per second, if that
    /// clearly beats no branch.
    func branchLength(after: Int, chain: Int, available: Int, acceptance α: Double, branchAcceptance β: Double,
                      stepTokens: Int, stepOutput: Double) -> Int {
        let reached = pow(α, Double(after)) * (after < chain ? 1 - α : 1) * β
        let without = stepOutput / cost(tokens: stepTokens)
        var best = 0, bestRate = without
        for length in stride(from: 1, through: available, by: 1) {
            let gain = reached * Self.expectedTokens(draft: length - 1, acceptance: α)
            let rate = (stepOutput + gain) / cost(tokens: stepTokens + length)
            if rate > bestRate { best = length; bestRate = rate }
        }
        return bestRate > without * 1.02 ? best : 0
    }
}

/// What one sequence's drafts have been worth: each verified drafted token is a trial,
/// kept or the first rejected; both counts fade by a factor per trial, so that the
/// estimate follows the text (a copied passage, then free prose) at the same pace whatever
/// the draft lengths were.
struct AcceptanceEstimate {
    private var accepted = 0.0
    private var rejected = 0.0
    /// The prior: by default four tokens kept for one rejected (α = 0.8), optimistic so
    /// that drafting is tried, and weak, so that one bad draft already shortens the next.
    private let priorAccepted: Double, priorRejected: Double

    init(priorAccepted: Double = 4, priorRejected: Double = 1) {
        self.priorAccepted = priorAccepted
        self.priorRejected = priorRejected
    }
    /// Evidence fades by this per trial: about the last twenty tokens count.
    private static let decay = 0.95

    /// The probability that a drafted token is kept, given the ones before it were.
    var rate: Double { (accepted + priorAccepted) / (accepted + rejected + priorAccepted + priorRejected) }

    mutating func observe(drafted: Int, accepted kept: Int) {
        guard drafted > 0 else { return }
        let fade = pow(Self.decay, Double(drafted))
        accepted = fade * accepted + Double(kept)
        rejected = fade * rejected + (kept < drafted ? 1 : 0)
    }

    /// A step without a draft: the evidence fades toward the prior, so that a sequence
    /// whose drafts failed in one passage tries again in the next.
    mutating func relax() {
        accepted *= 0.9
        rejected *= 0.9
    }
}
