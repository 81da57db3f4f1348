// Row statistics of per-bar return series for jaxtrade.metrics: XLA FFI handlers for CPU.
//
// XLA:CPU has no fast selection (its sort and top_k call a comparator per comparison) and
// runs a per-bar recurrence as one small kernel per bar, so on [10,000 x 2,520] returns the
// compiled JAX metrics spend most of their time on the exact 5%/95% tails and on the drawdown
// scan. These handlers compute the same statistics of each row in a few passes while the row
// sits in L1: moments; the drawdown (and trade) recurrence of 8 rows at once, one vector lane
// per row; then the tails, selected among candidates split off with Cornish-Fisher pivots
// (the whole row when a pivot leaves too few). Blocks of rows are shared out over XLA's
// intra-op thread pool. Accumulation is in double.
//
// Input x [..., T] (float32 or float64), optionally positions [..., T, A] of the same type;
// output [..., kNumReturnStats] (or [..., kNumStats] with positions) of the same type, one
// row of the Stat values below per input row. Attributes: ascending ranks and weights of the
// lower (5%) and upper (95%) linear quantiles, lo/hi/frac and ulo/uhi/ufrac, as
// jaxtrade.metrics._ranks gives them; CVaR is the mean of the lo + 1 smallest values.
// A row containing NaN gives NaN for every statistic.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

enum Stat : int64_t {
  kMean,         // mean return
  kM2,           // sum of squared deviations from the mean (0 for a constant row)
  kM3,           // sum of cubed deviations
  kM4,           // sum of fourth-power deviations
  kLogGrowth,    // log of the final equity (1.0 before the first bar); NaN if a return < -1
  kDownside,     // mean of min(r, 0)^2 over all bars
  kWins,         // sum of max(r, 0)
  kLosses,       // -sum of min(r, 0)
  kWinning,      // bars with r > 0
  kNonzero,      // bars with r != 0
  kMaxDrawdown,  // min over bars of equity / running peak - 1 (<= 0)
  kDuration,     // longest run of bars below the running peak
  kVar5,         // lower linear quantile
  kCvar5,        // mean of the lo + 1 smallest
  kVar95,        // upper linear quantile
  kNumReturnStats,
  // With positions [..., T, A] (the exposure that earned each bar's return):
  kNumTrades = kNumReturnStats,  // maximal runs of bars holding the same non-zero positions
  kAvgTrade,                     // mean compounded return of those runs (NaN without any)
  kTurnover,                     // mean over bars of sum over assets |position change|
  kExposure,                     // fraction of bars with a non-zero position
  kNumStats,
};

struct Ranks {
  int64_t lo, hi, ulo, uhi;
  double frac, ufrac;
};

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Pass 1 and 2: moments and the per-bar sums. Returns false when the row holds a NaN.
template <typename F>
bool Moments(const F* x, int64_t n, double* out) {
  double sum = 0, down = 0, wins = 0, losses = 0, winning = 0, nonzero = 0, ruin = 0;
  double low = x[0], high = x[0];
#pragma omp simd reduction(+ : sum, down, wins, losses, winning, nonzero, ruin) \
    reduction(min : low) reduction(max : high)
  for (int64_t t = 0; t < n; ++t) {
    const double v = x[t];
    const double neg = v < 0 ? v : 0.0;
    sum += v;
    down += neg * neg;
    wins += v > 0 ? v : 0.0;
    losses -= neg;
    winning += v > 0 ? 1.0 : 0.0;
    nonzero += v != 0 ? 1.0 : 0.0;
    ruin += v < -1 ? 1.0 : 0.0;
    low = std::min(low, v);
    high = std::max(high, v);
  }
  if (std::isnan(sum) || std::isnan(low) || std::isnan(high)) {
    out[kLogGrowth] = kNaN;
    return false;
  }
  const double mean = sum / static_cast<double>(n);
  double m2 = 0, m3 = 0, m4 = 0;
  if (high != low) {
#pragma omp simd reduction(+ : m2, m3, m4)
    for (int64_t t = 0; t < n; ++t) {
      const double c = static_cast<double>(x[t]) - mean;
      const double c2 = c * c;
      m2 += c2;
      m3 += c2 * c;
      m4 += c2 * c2;
    }
  }
  out[kMean] = mean;
  out[kM2] = m2;
  out[kM3] = m3;
  out[kM4] = m4;
  out[kDownside] = down / static_cast<double>(n);
  out[kWins] = wins;
  out[kLosses] = losses;
  out[kWinning] = winning;
  out[kNonzero] = nonzero;
  out[kLogGrowth] = ruin > 0 ? kNaN : 0.0;  // the drawdown pass adds the log of equity
  return true;
}

// Rows whose recurrences run together, one lane of a vector of doubles each.
constexpr int kLanes = 8;
typedef double Lanes __attribute__((vector_size(8 * kLanes)));

// With positions, before pass 3: the per-bar trade state of one row of positions [T, A] as
// codes[t]: 0 no change, 1 a change to flat, 2 a change to a held position. A change is any
// asset's position differing from the bar before (the first bar compares with flat); held
// is any asset non-zero. Also turnover and exposure.
template <typename F>
void PositionCodes(const F* pos, int64_t n, int64_t assets, F* codes, double* out) {
  double traded = 0, exposed = 0;
  if (assets == 1) {
    traded = std::abs(static_cast<double>(pos[0]));
    exposed = pos[0] != 0 ? 1.0 : 0.0;
    codes[0] = pos[0] != 0 ? F(2) : F(0);
#pragma omp simd reduction(+ : traded, exposed)
    for (int64_t t = 1; t < n; ++t) {
      const F now = pos[t], before = pos[t - 1];
      traded += std::abs(static_cast<double>(now) - static_cast<double>(before));
      exposed += now != 0 ? 1.0 : 0.0;
      codes[t] = now != before ? (now != 0 ? F(2) : F(1)) : F(0);
    }
  } else {
    for (int64_t t = 0; t < n; ++t) {
      bool changed = false, held = false;
      for (int64_t a = 0; a < assets; ++a) {
        const F now = pos[t * assets + a], before = t > 0 ? pos[(t - 1) * assets + a] : F(0);
        traded += std::abs(static_cast<double>(now) - static_cast<double>(before));
        changed |= now != before;
        held |= now != 0;
      }
      exposed += held ? 1.0 : 0.0;
      codes[t] = changed ? (held ? F(2) : F(1)) : F(0);
    }
  }
  out[kTurnover] = traded / static_cast<double>(n);
  out[kExposure] = exposed / static_cast<double>(n);
}

// Eight float rows read as eight bars: out[k][g] = rows[g][t + k]. An 8 x 8 transpose in
// registers (three rounds of two-vector shuffles) instead of 64 scalar loads and inserts.
typedef float Floats8 __attribute__((vector_size(32)));
typedef int Ints8 __attribute__((vector_size(32)));

inline void Transpose8(const float* const* rows, int64_t t, Floats8* out) {
  Floats8 r[8], a[8], b[8];
  for (int g = 0; g < 8; ++g) __builtin_memcpy(&r[g], rows[g] + t, sizeof(Floats8));
  const Ints8 lo{0, 8, 1, 9, 4, 12, 5, 13}, hi{2, 10, 3, 11, 6, 14, 7, 15};
  const Ints8 pair_lo{0, 1, 8, 9, 4, 5, 12, 13}, pair_hi{2, 3, 10, 11, 6, 7, 14, 15};
  const Ints8 half_lo{0, 1, 2, 3, 8, 9, 10, 11}, half_hi{4, 5, 6, 7, 12, 13, 14, 15};
  for (int g = 0; g < 8; g += 2) {  // [r0_0 r1_0 r0_1 r1_1 | r0_4 r1_4 r0_5 r1_5], ...
    a[g] = __builtin_shuffle(r[g], r[g + 1], lo);
    a[g + 1] = __builtin_shuffle(r[g], r[g + 1], hi);
  }
  for (int g = 0; g < 8; g += 4) {  // [r0_0 r1_0 r2_0 r3_0 | r0_4 r1_4 r2_4 r3_4], ...
    b[g] = __builtin_shuffle(a[g], a[g + 2], pair_lo);
    b[g + 1] = __builtin_shuffle(a[g], a[g + 2], pair_hi);
    b[g + 2] = __builtin_shuffle(a[g + 1], a[g + 3], pair_lo);
    b[g + 3] = __builtin_shuffle(a[g + 1], a[g + 3], pair_hi);
  }
  for (int k = 0; k < 4; ++k) {  // halves of rows 0-3 and 4-7: bars k and k + 4
    out[k] = __builtin_shuffle(b[k], b[k + 4], half_lo);
    out[k + 4] = __builtin_shuffle(b[k], b[k + 4], half_hi);
  }
}

// Pass 3: the drawdown recurrence (and with kTrades the trade recurrence) of kLanes rows at
// once. The worst ratio equity / peak is kept as the pair (e_w, p_w) and compared by
// cross-multiplication (peaks are >= 1), so no division runs per bar.
template <typename F, bool kTrades>
void Drawdowns(const F* const* rows, int64_t n, double* const* outs, int used,
               const F* const* codes) {
  const Lanes one = Lanes{} + 1.0, zero = Lanes{};
  Lanes eq = one, peak = one, worst_e = one, worst_p = one, since = zero, longest = zero;
  Lanes growth = one, in_trade = zero, count = zero, total = zero;
  auto bar = [&](const Lanes& r, const Lanes& code) {
    const Lanes e = eq * (one + r);
    const Lanes p = e > peak ? e : peak;
    const auto deeper = e * worst_p < worst_e * p;
    worst_e = deeper ? e : worst_e;
    worst_p = deeper ? p : worst_p;
    since = e >= p ? zero : since + one;
    longest = since > longest ? since : longest;
    eq = e;
    peak = p;
    if constexpr (kTrades) {
      // A change closes the open trade (if any) and opens one when the new position is held.
      const auto change = code != zero;
      const auto closing = change & (in_trade != zero);
      count = closing ? count + one : count;
      total = closing ? total + growth - one : total;
      in_trade = change ? (code == one + one ? one : zero) : in_trade;
      growth = (change ? one : growth) * (in_trade != zero ? one + r : one);
    }
  };
  int64_t t = 0;
  if constexpr (sizeof(F) == 4 && kLanes == 8) {
    Floats8 r8[8], c8[8];
    for (; t + 8 <= n; t += 8) {
      Transpose8(rows, t, r8);
      if constexpr (kTrades) Transpose8(codes, t, c8);
      for (int k = 0; k < 8; ++k) {
        bar(__builtin_convertvector(r8[k], Lanes),
            kTrades ? __builtin_convertvector(c8[k], Lanes) : zero);
      }
    }
  }
  for (; t < n; ++t) {
    Lanes r, code = zero;
    for (int g = 0; g < kLanes; ++g) r[g] = static_cast<double>(rows[g][t]);
    if constexpr (kTrades) {
      for (int g = 0; g < kLanes; ++g) code[g] = static_cast<double>(codes[g][t]);
    }
    bar(r, code);
  }
  for (int g = 0; g < used; ++g) {
    double* out = outs[g];
    out[kMaxDrawdown] = worst_e[g] / worst_p[g] - 1.0;
    out[kDuration] = longest[g];
    // log(0) = -inf for a wiped-out account, as the sum of log1p(r) gives.
    out[kLogGrowth] = std::isnan(out[kLogGrowth]) ? kNaN : std::log(eq[g]);
    if constexpr (kTrades) {
      const double trades = count[g] + (in_trade[g] != 0 ? 1.0 : 0.0);
      const double sum = total[g] + (in_trade[g] != 0 ? growth[g] - 1.0 : 0.0);
      out[kNumTrades] = trades;
      out[kAvgTrade] = trades > 0 ? sum / trades : kNaN;
    }
  }
}

// Splits x[0, n) into below[] (values v with v < low, or v <= low when kInclusive) and
// above[] (v > high, or v >= high), returning both counts. Branch-free: each value (with
// AVX-512 and float32, each compressed vector of 16) is stored every time and the write
// position advances by the number kept. Both outputs need n + 16 slots.
template <bool kInclusive, typename F>
void Split(const F* x, int64_t n, F low, F high, F* below, int64_t* num_below, F* above,
           int64_t* num_above) {
  int64_t nb = 0, na = 0;
  int64_t t = 0;
#if defined(__AVX512F__)
  constexpr int kBelow = kInclusive ? _CMP_LE_OQ : _CMP_LT_OQ;
  constexpr int kAbove = kInclusive ? _CMP_GE_OQ : _CMP_GT_OQ;
  if constexpr (sizeof(F) == 4) {
    const __m512 vlow = _mm512_set1_ps(low), vhigh = _mm512_set1_ps(high);
    for (; t + 16 <= n; t += 16) {
      const __m512 v = _mm512_loadu_ps(x + t);
      const __mmask16 mb = _mm512_cmp_ps_mask(v, vlow, kBelow);
      const __mmask16 ma = _mm512_cmp_ps_mask(v, vhigh, kAbove);
      _mm512_storeu_ps(below + nb, _mm512_maskz_compress_ps(mb, v));
      _mm512_storeu_ps(above + na, _mm512_maskz_compress_ps(ma, v));
      nb += __builtin_popcount(mb);
      na += __builtin_popcount(ma);
    }
  }
#endif
  for (; t < n; ++t) {
    const F v = x[t];
    below[nb] = v;
    nb += kInclusive ? v <= low : v < low;
    above[na] = v;
    na += kInclusive ? v >= high : v > high;
  }
  *num_below = nb;
  *num_above = na;
}

// The k-th smallest (0-based) of buffers[0][0, m): quickselect with a three-way split
// (values below, equal to and above a median-of-three pivot), the three buffers of n + 16
// slots taking turns as source and targets; small remainders are insertion-sorted. The
// buffer contents are scratch.
template <typename F>
F Select(F* const* buffers, int64_t m, int64_t k) {
  int src = 0;
  while (m > 24) {
    F* a = buffers[src];
    F p0 = a[m / 4], p1 = a[m / 2], p2 = a[(3 * m) / 4];
    if (p0 > p1) std::swap(p0, p1);
    if (p1 > p2) std::swap(p1, p2);
    if (p0 > p1) std::swap(p0, p1);
    const F pivot = p1;
    const int lower = (src + 1) % 3, upper = (src + 2) % 3;
    int64_t nl = 0, nu = 0;
    Split<false>(a, m, pivot, pivot, buffers[lower], &nl, buffers[upper], &nu);
    if (k < nl) {
      src = lower;
      m = nl;
    } else if (k < m - nu) {
      return pivot;
    } else {
      k -= m - nu;
      src = upper;
      m = nu;
    }
  }
  F* a = buffers[src];
  for (int64_t i = 1; i < m; ++i) {
    const F v = a[i];
    int64_t j = i;
    for (; j > 0 && a[j - 1] > v; --j) a[j] = a[j - 1];
    a[j] = v;
  }
  return a[k];
}

// Standard normal quantile (Acklam's rational approximation, relative error < 1.2e-9);
// only steers the pivot, so its accuracy does not reach the results.
double NormalQuantile(double p) {
  static const double a[] = {-3.969683028665376e+01, 2.209460984245205e+02,
                             -2.759285104469687e+02, 1.383577518672690e+02,
                             -3.066479806614716e+01, 2.506628277459239e+00};
  static const double b[] = {-5.447609879822406e+01, 1.615858368580409e+02,
                             -1.556989798598866e+02, 6.680131188771972e+01,
                             -1.328068155288572e+01};
  static const double c[] = {-7.784894002430293e-03, -3.223964580411365e-01,
                             -2.400758277161838e+00, -2.549671464165284e+00,
                             4.374664141464968e+00,  2.938163982698783e+00};
  static const double d[] = {7.784695709041462e-03, 3.224671290700398e-01,
                             2.445134137142996e+00, 3.754408661907416e+00};
  p = std::min(std::max(p, 1e-12), 1 - 1e-12);
  if (p < 0.02425) {
    const double q = std::sqrt(-2 * std::log(p));
    return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
           ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  }
  if (p > 1 - 0.02425) return -NormalQuantile(1 - p);
  const double q = p - 0.5, r = q * q;
  return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
         (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
}

// Pass 4: the exact tails. Candidates for the hi + 1 smallest and the n - ulo largest
// values are split off with Cornish-Fisher pivots (the whole row when a pivot leaves too
// few), the order statistics at ranks lo and ulo are selected among them, and a pass over
// each candidate set gives the neighbours at ranks hi and uhi and the CVaR sum, ties
// included. `scratch` is five buffers of n + 16 values.
template <typename F>
void Tails(const F* x, int64_t n, const Ranks& r, double* out, F* const* scratch) {
  const int64_t need_low = r.hi + 1, need_high = n - r.ulo;
  F* below[3] = {scratch[0], scratch[2], scratch[3]};
  F* above[3] = {scratch[1], scratch[2], scratch[3]};
  int64_t nb = 0, na = 0;
  const double m2 = out[kM2];
  if (m2 > 0 && n >= 64) {
    // Cornish-Fisher quantiles (normal corrected by skew and excess kurtosis) for a count
    // a little above what is needed; fat tails make the correction matter.
    const double nn = static_cast<double>(n), mean = out[kMean];
    const double var = m2 / nn, sd = std::sqrt(m2 / (nn - 1));
    const double s = out[kM3] / nn / std::pow(var, 1.5);
    const double k = out[kM4] / nn / (var * var) - 3.0;
    auto pivot = [&](double count, double sign) {
      const double z = NormalQuantile(count / nn);
      const double sk = sign * s;
      double w = z + (z * z - 1) * sk / 6 + (z * z * z - 3 * z) * k / 24 -
                 (2 * z * z * z - 5 * z) * sk * sk / 36;
      w = std::min(std::max(w, 4 * z), 0.5 * z);  // z < 0: keep it in [4z, z/2]
      return sign * (sign * mean + w * sd);
    };
    const double margin = 8 + 0.25 * static_cast<double>(std::max(need_low, need_high));
    const F low = static_cast<F>(pivot(static_cast<double>(need_low) + margin, 1.0));
    const F high = static_cast<F>(pivot(static_cast<double>(need_high) + margin, -1.0));
    Split<true>(x, n, low, high, below[0], &nb, above[0], &na);
  }
  using Count = std::conditional_t<sizeof(F) == 4, int32_t, int64_t>;
  constexpr F kInf = std::numeric_limits<F>::infinity();
  F* kept = scratch[4];  // the candidates as split: Select scrambles its buffers
  // Lower tail. below[] holds the nb smallest values (ties included), so ascending ranks
  // match, and every value < v and the next one above v (when rank hi needs it) are in it.
  if (nb < need_low) {
    std::copy(x, x + n, below[0]);
    nb = n;
  }
  std::copy(below[0], below[0] + nb, kept);
  const F v = Select(below, nb, r.lo);
  F sum_below = 0, next_v = kInf;
  Count less = 0, at_most_v = 0;
#pragma omp simd reduction(+ : sum_below, less, at_most_v) reduction(min : next_v)
  for (int64_t i = 0; i < nb; ++i) {
    const F value = kept[i];
    sum_below += value < v ? value : F(0);
    less += value < v;
    at_most_v += value <= v;
    next_v = value > v && value < next_v ? value : next_v;
  }
  // Upper tail: above[] holds the na largest, so ascending rank ulo of x is rank
  // ulo - (n - na) there, and every value > u is in it.
  if (na < need_high) {
    std::copy(x, x + n, above[0]);
    na = n;
  }
  std::copy(above[0], above[0] + na, kept);
  const F u = Select(above, na, r.ulo - (n - na));
  F next_u = kInf;
  Count greater = 0;
#pragma omp simd reduction(+ : greater) reduction(min : next_u)
  for (int64_t i = 0; i < na; ++i) {
    const F value = kept[i];
    greater += value > u;
    next_u = value > u && value < next_u ? value : next_u;
  }
  const int64_t at_most_u = n - greater;
  const double x_lo = v, x_hi = at_most_v >= r.hi + 1 ? v : next_v;
  const double u_lo = u, u_hi = at_most_u >= r.uhi + 1 ? u : next_u;
  out[kVar5] = x_lo + r.frac * (x_hi - x_lo);
  out[kCvar5] = (sum_below + (static_cast<double>(r.lo + 1 - less)) * x_lo) /
                static_cast<double>(r.lo + 1);
  out[kVar95] = u_lo + r.ufrac * (u_hi - u_lo);
}

// The rows to work on: returns x [rows, n] and optionally positions [rows, n, assets].
template <typename F>
struct Rows {
  const F* x;
  const F* positions;  // nullptr: returns only
  int64_t num_rows, n, assets;
  int64_t width() const { return positions ? kNumStats : kNumReturnStats; }
};

template <typename F>
void RowBlock(const Rows<F>& in, int64_t rows_begin, int64_t rows_end, const Ranks& r,
              F* result) {
  const int64_t n = in.n, width = in.width();
  std::vector<double> stats(kLanes * kNumStats);
  std::vector<F> buffers(5 * (n + 16));
  std::vector<F> codes(in.positions ? kLanes * n : 0);
  const F* lane_codes[kLanes];
  F* scratch[5];
  for (int i = 0; i < 5; ++i) scratch[i] = buffers.data() + i * (n + 16);
  for (int64_t row = rows_begin; row < rows_end; row += kLanes) {
    const int used = static_cast<int>(std::min<int64_t>(kLanes, rows_end - row));
    bool finite[kLanes];
    const F* rows[kLanes];
    double* outs[kLanes];
    for (int g = 0; g < kLanes; ++g) {
      const int64_t source = row + std::min(g, used - 1);  // spare lanes repeat the last row
      rows[g] = in.x + source * n;
      outs[g] = stats.data() + g * kNumStats;
      if (g < used) finite[g] = Moments(rows[g], n, outs[g]);
      if (in.positions) {
        F* row_codes = codes.data() + g * n;
        PositionCodes(in.positions + source * n * in.assets, n, in.assets, row_codes, outs[g]);
        lane_codes[g] = row_codes;
      }
    }
    if (in.positions) {
      Drawdowns<F, true>(rows, n, outs, used, lane_codes);
    } else {
      Drawdowns<F, false>(rows, n, outs, used, nullptr);
    }
    for (int g = 0; g < used; ++g) {
      F* dst = result + (row + g) * width;
      if (!finite[g]) {
        for (int64_t i = 0; i < width; ++i) dst[i] = static_cast<F>(kNaN);
        continue;
      }
      Tails(rows[g], n, r, outs[g], scratch);
      for (int64_t i = 0; i < width; ++i) dst[i] = static_cast<F>(outs[g][i]);
    }
  }
}

// Rows are cut into blocks that the calling thread and helpers scheduled on XLA's
// intra-op pool claim from a shared counter. The caller waits only for blocks that some
// thread has claimed and is running, never for a helper still queued (several of these
// calls may be running at once on all the pool's threads); a helper that starts after the
// work is gone finds nothing to claim and touches only the shared counters it co-owns.
template <typename F>
struct Work {
  Rows<F> in;
  Ranks ranks;
  F* result;
  int64_t blocks, per_block;
  std::atomic<int64_t> next{0}, finished{0};
  std::mutex mutex;
  std::condition_variable all_done;

  void Drain() {
    for (;;) {
      const int64_t b = next.fetch_add(1);
      if (b >= blocks) return;
      const int64_t begin = b * per_block, end = std::min(in.num_rows, begin + per_block);
      if (begin < end) RowBlock(in, begin, end, ranks, result);
      if (finished.fetch_add(1) + 1 == blocks) {
        std::lock_guard<std::mutex> lock(mutex);
        all_done.notify_all();
      }
    }
  }
};

template <typename F>
void AllRows(ffi::ThreadPool& pool, const Rows<F>& in, const Ranks& r, F* result) {
  const int64_t threads = std::max<int64_t>(1, pool.num_threads());
  // Split only work worth it (about 1 ms or more); a few blocks per thread balance them.
  const int64_t blocks =
      in.num_rows * in.n >= (1 << 20) ? std::min(4 * threads, (in.num_rows + 7) / 8) : 1;
  if (threads == 1 || blocks <= 1) {
    RowBlock(in, 0, in.num_rows, r, result);
    return;
  }
  auto work = std::make_shared<Work<F>>();
  work->in = in;
  work->ranks = r;
  work->result = result;
  work->blocks = blocks;
  work->per_block = (in.num_rows + blocks - 1) / blocks;
  for (int64_t i = 1; i < threads; ++i) pool.Schedule([work] { work->Drain(); });
  work->Drain();
  std::unique_lock<std::mutex> lock(work->mutex);
  work->all_done.wait(lock, [&] { return work->finished.load() == work->blocks; });
}

// Shared by both handlers; `positions` is null for the returns-only one.
ffi::Error Run(ffi::ThreadPool& pool, const ffi::AnyBuffer& x, const ffi::AnyBuffer* positions,
               ffi::AnyBuffer& out, const Ranks& r) {
  const auto dims = x.dimensions();
  if (dims.size() < 1) return ffi::Error::InvalidArgument("row_stats: x needs a bar axis");
  const int64_t n = dims.back();
  if (n < 1) return ffi::Error::InvalidArgument("row_stats: series must have a bar");
  const int64_t num_rows = static_cast<int64_t>(x.element_count()) / n;
  int64_t assets = 0;
  if (positions) {
    if (positions->element_type() != x.element_type())
      return ffi::Error::InvalidArgument("row_stats: positions must have the returns' type");
    const int64_t count = static_cast<int64_t>(positions->element_count());
    if (count % (num_rows * n) != 0 || count == 0)
      return ffi::Error::InvalidArgument("row_stats: positions must be [..., T, A]");
    assets = count / (num_rows * n);
  }
  const int64_t width = positions ? kNumStats : kNumReturnStats;
  if (static_cast<int64_t>(out.element_count()) != num_rows * width)
    return ffi::Error::InvalidArgument("row_stats: output has the wrong number of statistics");
  if (r.lo < 0 || r.hi < r.lo || r.hi >= n || r.ulo < 0 || r.uhi < r.ulo || r.uhi >= n)
    return ffi::Error::InvalidArgument("row_stats: quantile ranks out of range");
  switch (x.element_type()) {
    case ffi::DataType::F32: {
      const Rows<float> in{x.typed_data<float>(),
                           positions ? positions->typed_data<float>() : nullptr, num_rows, n,
                           assets};
      AllRows(pool, in, r, out.typed_data<float>());
      return ffi::Error::Success();
    }
    case ffi::DataType::F64: {
      const Rows<double> in{x.typed_data<double>(),
                            positions ? positions->typed_data<double>() : nullptr, num_rows, n,
                            assets};
      AllRows(pool, in, r, out.typed_data<double>());
      return ffi::Error::Success();
    }
    default:
      return ffi::Error::InvalidArgument("row_stats: x must be float32 or float64");
  }
}

ffi::Error RowStatsImpl(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::Result<ffi::AnyBuffer> out,
                        int64_t lo, int64_t hi, double frac, int64_t ulo, int64_t uhi,
                        double ufrac) {
  return Run(pool, x, nullptr, *out, Ranks{lo, hi, ulo, uhi, frac, ufrac});
}

ffi::Error RowStatsPositionsImpl(ffi::ThreadPool pool, ffi::AnyBuffer x,
                                 ffi::AnyBuffer positions, ffi::Result<ffi::AnyBuffer> out,
                                 int64_t lo, int64_t hi, double frac, int64_t ulo, int64_t uhi,
                                 double ufrac) {
  return Run(pool, x, &positions, *out, Ranks{lo, hi, ulo, uhi, frac, ufrac});
}

}  // namespace

extern "C" int64_t jaxtrade_row_stats_count() { return kNumStats; }

// Both handlers end with the same quantile-rank attributes.
template <typename Binding>
auto WithRanks(Binding binding) {
  return std::move(binding)
      .template Attr<int64_t>("lo")
      .template Attr<int64_t>("hi")
      .template Attr<double>("frac")
      .template Attr<int64_t>("ulo")
      .template Attr<int64_t>("uhi")
      .template Attr<double>("ufrac");
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxtradeRowStats, RowStatsImpl,
                              WithRanks(ffi::Ffi::Bind()
                                            .Ctx<ffi::ThreadPool>()
                                            .Arg<ffi::AnyBuffer>()
                                            .Ret<ffi::AnyBuffer>()));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxtradeRowStatsPositions, RowStatsPositionsImpl,
                              WithRanks(ffi::Ffi::Bind()
                                            .Ctx<ffi::ThreadPool>()
                                            .Arg<ffi::AnyBuffer>()
                                            .Arg<ffi::AnyBuffer>()
                                            .Ret<ffi::AnyBuffer>()));
