// The load generator's latency histogram (benchmarks/latency_histogram.hpp) against exact
// percentiles of the same values: every reported percentile must be within the histogram's
// stated precision (1/128) of the true one, the extremes exact, and merging lossless.
#include "benchmarks/latency_histogram.hpp"

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

using portcullis::bench::LatencyHistogram;

namespace {
// The exact percentile as the histogram defines it: the smallest value at or below which
// `percent` of the values lie (nearest rank).
std::uint64_t exact_percentile(std::vector<std::uint64_t> values, double percent) {
  std::sort(values.begin(), values.end());
  const double wanted = percent / 100.0 * static_cast<double>(values.size());
  auto rank = static_cast<std::size_t>(std::ceil(wanted));
  rank = std::clamp<std::size_t>(rank, 1, values.size());
  return values[rank - 1];
}

void require_within_precision(std::uint64_t got, std::uint64_t exact) {
  INFO("reported " << got << ", exact " << exact);
  REQUIRE(got >= exact);  // a bucket's upper edge: never below the true value
  REQUIRE(static_cast<double>(got - exact) <= static_cast<double>(exact) / 128.0 + 1.0);
}
}  // namespace

TEST_CASE("histogram: percentiles of a wide, skewed distribution are within 1/128 of exact") {
  std::mt19937_64 rng(20261129);
  // Log-normal around 300 us with a long tail, in nanoseconds: what a proxy's latencies look like.
  std::lognormal_distribution<double> latency(std::log(300'000.0), 1.2);
  std::vector<std::uint64_t> values;
  LatencyHistogram h;
  for (int i = 0; i < 200'000; ++i) {
    const auto v = static_cast<std::uint64_t>(latency(rng)) + 1;
    values.push_back(v);
    h.record(v);
  }
  REQUIRE(h.count() == values.size());
  for (double p : {1.0, 10.0, 50.0, 90.0, 99.0, 99.9, 99.99}) {
    INFO("p" << p);
    require_within_precision(h.percentile(p), exact_percentile(values, p));
  }
  REQUIRE(h.min() == *std::min_element(values.begin(), values.end()));
  REQUIRE(h.max() == *std::max_element(values.begin(), values.end()));
  REQUIRE(h.percentile(100) == h.max());
  double sum = 0;
  for (auto v : values) sum += static_cast<double>(v);
  REQUIRE(h.mean() == Approx(sum / static_cast<double>(values.size())).epsilon(1e-9));
}

TEST_CASE("histogram: small values are exact and one value is every percentile") {
  LatencyHistogram h;
  for (std::uint64_t v = 0; v < 128; ++v) h.record(v);
  REQUIRE(h.percentile(50) == 63);  // rank 64 of 0..127
  REQUIRE(h.percentile(100) == 127);
  REQUIRE(h.min() == 0);

  LatencyHistogram one;
  one.record(123'456'789);
  for (double p : {0.0, 50.0, 99.9, 100.0}) REQUIRE(one.percentile(p) == 123'456'789);

  LatencyHistogram none;
  REQUIRE(none.count() == 0);
  REQUIRE(none.percentile(99) == 0);
  REQUIRE(none.min() == 0);
  REQUIRE(none.max() == 0);
  REQUIRE(none.mean() == 0.0);
}

TEST_CASE("histogram: merging per-thread histograms equals recording everything in one") {
  std::mt19937_64 rng(7);
  std::uniform_int_distribution<std::uint64_t> fast(50'000, 400'000), slow(1'000'000, 90'000'000);
  LatencyHistogram a, b, all;
  for (int i = 0; i < 50'000; ++i) {
    const auto v = fast(rng);
    a.record(v);
    all.record(v);
  }
  for (int i = 0; i < 500; ++i) {
    const auto v = slow(rng);
    b.record(v);
    all.record(v);
  }
  a.merge(b);
  REQUIRE(a.count() == all.count());
  REQUIRE(a.min() == all.min());
  REQUIRE(a.max() == all.max());
  for (double p : {50.0, 99.0, 99.5, 99.9}) REQUIRE(a.percentile(p) == all.percentile(p));
  // The slow thread's 1% is the tail: p99.5 must come from it, not from the fast thread.
  REQUIRE(a.percentile(99.5) >= 1'000'000);
}

TEST_CASE("histogram: every value lands in a bucket that contains it, up to the largest") {
  std::vector<std::uint64_t> probes = {0, 1, 127, 128, 129, 255, 256, 1'000'000, std::uint64_t{1} << 40,
                                       (std::uint64_t{1} << 63) - 1, std::uint64_t{1} << 63, ~std::uint64_t{0}};
  for (unsigned bit = 0; bit < 64; ++bit) {
    const std::uint64_t p = std::uint64_t{1} << bit;
    probes.insert(probes.end(), {p - 1, p, p + 1});
  }
  std::size_t last_index = 0;
  std::sort(probes.begin(), probes.end());
  for (auto v : probes) {
    INFO("value " << v);
    const auto i = LatencyHistogram::index_of(v);
    REQUIRE(i < LatencyHistogram::kBuckets);
    REQUIRE(i >= last_index);  // monotone
    last_index = i;
    REQUIRE(LatencyHistogram::highest_equivalent(i) >= v);
    // The bucket below ends below v: v is in bucket i and no other.
    if (i > 0) REQUIRE(LatencyHistogram::highest_equivalent(i - 1) < v);
  }
  LatencyHistogram h;
  h.record(~std::uint64_t{0});
  REQUIRE(h.percentile(99) == ~std::uint64_t{0});
}
