#pragma once
// A log-bucketed latency histogram in the style of HdrHistogram: every power of two is split
// into 128 linear sub-buckets, so any recorded value is reported within 1/128 (< 0.8%) of its
// true value, from 1 ns to hours, in a fixed 58 KiB array. One per load-generator thread,
// merged at the end, so recording is a plain increment with no sharing.
#include <algorithm>
#include <bit>
#include <cstdint>
#include <limits>
#include <vector>

namespace portcullis::bench {

class LatencyHistogram {
 public:
  static constexpr unsigned kSubBucketBits = 7;
  static constexpr std::uint64_t kSubBuckets = std::uint64_t{1} << kSubBucketBits;
  static constexpr std::size_t kBuckets = (64 - kSubBucketBits + 1) * kSubBuckets;

  LatencyHistogram() : counts_(kBuckets, 0) {}

  void record(std::uint64_t value) {
    ++counts_[index_of(value)];
    ++total_;
    sum_ += static_cast<double>(value);
    min_ = std::min(min_, value);
    max_ = std::max(max_, value);
  }

  void merge(const LatencyHistogram& other) {
    for (std::size_t i = 0; i < kBuckets; ++i) counts_[i] += other.counts_[i];
    total_ += other.total_;
    sum_ += other.sum_;
    min_ = std::min(min_, other.min_);
    max_ = std::max(max_, other.max_);
  }

  std::uint64_t count() const { return total_; }
  std::uint64_t min() const { return total_ == 0 ? 0 : min_; }
  std::uint64_t max() const { return max_; }
  double mean() const { return total_ == 0 ? 0.0 : sum_ / static_cast<double>(total_); }

  // The smallest recorded bucket's upper edge at or below which `percent` of the values lie
  // (clamped to the exact maximum, so p100 is the true maximum).
  std::uint64_t percentile(double percent) const {
    if (total_ == 0) return 0;
    const double wanted = percent / 100.0 * static_cast<double>(total_);
    std::uint64_t rank = static_cast<std::uint64_t>(wanted);
    if (static_cast<double>(rank) < wanted) ++rank;
    rank = std::clamp<std::uint64_t>(rank, 1, total_);
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < kBuckets; ++i) {
      seen += counts_[i];
      if (seen >= rank) return std::min(highest_equivalent(i), max_);
    }
    return max_;
  }

  static std::size_t index_of(std::uint64_t value) {
    if (value < kSubBuckets) return static_cast<std::size_t>(value);
    const unsigned exponent = 63u - static_cast<unsigned>(std::countl_zero(value));
    const unsigned shift = exponent - kSubBucketBits;
    const std::uint64_t sub = (value >> shift) - kSubBuckets;
    return static_cast<std::size_t>((shift + 1) * kSubBuckets + sub);
  }

  // The largest value that lands in bucket `index`.
  static std::uint64_t highest_equivalent(std::size_t index) {
    if (index < kSubBuckets) return index;
    const std::uint64_t shift = index / kSubBuckets - 1;
    const std::uint64_t sub = index % kSubBuckets;
    const std::uint64_t lowest = (kSubBuckets + sub) << shift;
    const std::uint64_t width = std::uint64_t{1} << shift;
    return lowest + (width - 1);
  }

 private:
  std::vector<std::uint64_t> counts_;
  std::uint64_t total_ = 0;
  double sum_ = 0;
  std::uint64_t min_ = std::numeric_limits<std::uint64_t>::max();
  std::uint64_t max_ = 0;
};

}  // namespace portcullis::bench
