import Foundation

/// A step being planned: its tokens, how many positions they attend to in all, and how
/// many tokens it is expected to yield.
struct StepPlan {
    var tokens = 0
    var attended = 0
    var output = 0.0

    /// Adds `count` tokens of one sequence at positions `first`, `first + 1`, …; the
    /// token at position p attends to p + 1 positions.
    mutating func add(tokens count: Int, from first: Int) {
        tokens += count
        attended += count * first + count * (count + 1) / 2
    }
}

/// How many tokens to draft, chosen per sequence and step from what drafting has been
/// worth (each sequence's measured acceptance) and what verifying costs (a model of the
/// forward pass's time, measured on this machine).
///
/// On a CPU the verify pass is not free: a pass over k + 1 tokens costs about
/// max(weight bytes ÷ bandwidth, (k + 1) × FLOPs ÷ compute), plus whatever the kernels
/// lose to unpacking, plus each token's attention over its context, so a draft is worth
/// its tokens only when enough of them are kept. The model has two parts, both measured at
/// start (`EngineCore.calibrate`): the pass over the weights for each token count, at the
/// start of a context where attention costs next to nothing; and attention, a cost per
/// attended position (the sum over a step's tokens of the positions each attends to). The
/// second is what makes a drafted token at a long context cost more than a short pass says,
/// and, since each sequence's tokens pay for their own context, what keeps a batch of long
/// sequences from drafting when their tokens already keep the compute busy. Both are fixed
/// once measured: a step's time also carries this machine's drift, which a fit to the steps
/// run would take for the cost of attention (a slow minute made drafting look dear and
/// stopped it).
///
/// With acceptance α per drafted token (a geometric run, as in Leviathan et al.), drafting
/// k yields on average E(k) = (1 − α^(k+1)) / (1 − α) tokens per pass. The step as a whole
/// is planned greedily: it starts with every sequence's own tokens, and each decoding
/// sequence in turn takes the k that most raises the step's tokens per second.
final class SpeculationPolicy {
    let maxDraft: Int
    /// Seconds of a pass of n tokens at the start of a context, n = 1...maxTracked (index
    /// 0 unused); beyond, proportional to n.
    private let passSeconds: [Double]
    /// Seconds of attention per attended position.
    let secondsPerAttendedPosition: Double
    /// Seconds of a draft model's passes: the first of a draft (one or two tokens in) and
    /// each further one; zero for proposers without a model.
    var draftSeconds: (first: Double, next: Double) = (0, 0)
    private let maxTracked: Int

    /// `calibration`: measured (tokens, seconds) of forward passes at the start of a
    /// context, at least one token count.
    init(maxDraft: Int, calibration: [(tokens: Int, seconds: Double)], secondsPerAttendedPosition: Double = 0) {
        precondition(!calibration.isEmpty)
        self.maxDraft = maxDraft
        self.secondsPerAttendedPosition = secondsPerAttendedPosition
        maxTracked = max(64, maxDraft + 1)
        // A pass of more tokens never takes less time; where a measurement says so, this
        // machine was slow at that moment, and the later, faster one stands for both.
        var points = calibration.sorted { $0.tokens < $1.tokens }
        for i in points.indices.reversed().dropFirst() { points[i].seconds = min(points[i].seconds, points[i + 1].seconds) }
        passSeconds = [0] + (1...maxTracked).map { Self.interpolate(points, at: $0) }
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

    private func pass(tokens n: Int) -> Double {
        n <= maxTracked ? passSeconds[max(1, n)] : passSeconds[maxTracked] * Double(n) / Double(maxTracked)
    }

    func cost(_ step: StepPlan) -> Double {
        pass(tokens: step.tokens) + secondsPerAttendedPosition * Double(step.attended)
    }

    static func expectedTokens(draft k: Int, acceptance α: Double) -> Double {
        α >= 1 ? Double(k + 1) : (1 - pow(α, Double(k + 1))) / (1 - α)
    }

    /// The draft length for one sequence of `step` (its own token included, at position
    /// `context - 1`): the k in 0...limit that most raises the step's output per second.
    func draftLength(acceptance α: Double, limit: Int, context: Int, step: StepPlan) -> Int {
        var best = 0, bestRate = step.output / cost(step)
        for k in stride(from: 1, through: min(limit, maxDraft), by: 1) {
            var drafted = step
            drafted.add(tokens: k, from: context)
            let seconds = cost(drafted) + draftSeconds.first + Double(k - 1) * draftSeconds.next
            let rate = (step.output - 1 + Self.expectedTokens(draft: k, acceptance: α)) / seconds
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
    /// token with β and each further one with α. The branch's first token sits at
    /// position `context + after`; `step` holds the chain. The length is the one that most
    /// raises the step's output per second, if that clearly beats no branch.
    func branchLength(after: Int, chain: Int, available: Int, acceptance α: Double, branchAcceptance β: Double,
                      context: Int, step: StepPlan) -> Int {
        let reached = pow(α, Double(after)) * (after < chain ? 1 - α : 1) * β
        let without = step.output / cost(step)
        var best = 0, bestRate = without
        for length in stride(from: 1, through: available, by: 1) {
            let gain = reached * Self.expectedTokens(draft: length - 1, acceptance: α)
            var branched = step
            branched.add(tokens: length, from: context + after)
            let rate = (step.output + gain) / cost(branched)
            if rate > bestRate { best = length; bestRate = rate }
        }
        return bestRate > without * 1.02 ? best : 0
    }
}

/// What one sequence's drafts have been worth: each verified drafted token is a trial,
/// kept or the first rejected; the counts fade by a factor per trial, so that the estimate
/// follows the text (a copied passage, then free prose) at the same pace whatever the draft
/// lengths were. The prior is where the counts start and fades like any evidence: a prior
/// that stayed would cap the estimate (four kept for one rejected, with about twenty trials
/// remembered, at 0.96), and copying runs keep 97-99% of their drafted tokens, where each
/// hundredth of α is worth longer drafts.
struct AcceptanceEstimate {
    private var accepted: Double
    private var rejected: Double
    private let priorAccepted: Double, priorRejected: Double

    /// By default four tokens kept for one rejected (α = 0.8): optimistic so that drafting
    /// is tried, and weak, so that one bad draft already shortens the next.
    init(priorAccepted: Double = 4, priorRejected: Double = 1) {
        self.priorAccepted = priorAccepted
        self.priorRejected = priorRejected
        accepted = priorAccepted
        rejected = priorRejected
    }
    /// Evidence fades by this per trial: about the last twenty tokens count.
    private static let decay = 0.95

    /// The probability that a drafted token is kept, given the ones before it were.
    var rate: Double { accepted / (accepted + rejected) }

    mutating func observe(drafted: Int, accepted kept: Int) {
        guard drafted > 0 else { return }
        let fade = pow(Self.decay, Double(drafted))
        accepted = fade * accepted + Double(kept)
        rejected = fade * rejected + (kept < drafted ? 1 : 0)
    }

    /// A step without a draft: the counts move a tenth of the way back to the prior, so that
    /// a sequence whose drafts (or branches) failed in one passage tries again in the next.
    mutating func relax() {
        accepted = 0.9 * accepted + 0.1 * priorAccepted
        rejected = 0.9 * rejected + 0.1 * priorRejected
    }
}
