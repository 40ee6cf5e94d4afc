// The memory limit: the one place that decides how many bytes an entry point may ask for before
// it allocates them. Readers and entry points compute what a declared shape will cost (a Hessian
// is in² doubles) and call require_memory(), which refuses with MemoryLimitError naming the
// shape, the bytes needed and the limit — instead of std::bad_alloc, or the OOM killer, later.
//
// The limit, in order of precedence:
//   1. set_memory_limit(bytes) (the tool's --max-memory);
//   2. the environment variable QROUND_MAX_MEMORY (same syntax as parse_memory_size);
//   3. by default kDefaultMemoryFraction of the memory this process can have: the smallest of
//      physical memory, RLIMIT_AS / RLIMIT_DATA and the cgroup's memory.max. No limit is applied
//      when none of them can be read.
#pragma once

#include <cstdint>
#include <string>

namespace qround {

constexpr double kDefaultMemoryFraction = 0.8;

// The effective limit in bytes (UINT64_MAX when unlimited), and where it came from
// ("--max-memory", "QROUND_MAX_MEMORY", "80% of physical memory", …) for messages.
std::uint64_t memory_limit();
std::string memory_limit_source();

// Overrides the limit for the whole process (thread-safe); 0 restores the default.
// `source` names the setting in error messages.
void set_memory_limit(std::uint64_t bytes, const std::string& source = "set_memory_limit");

// "4G", "512M", "64k", "1.5GiB", "123456" (bytes; K/M/G/T are powers of 1024, an optional
// trailing "B" or "iB") or "50%" (of the default's base: the memory this process can have).
// InvalidArgument when malformed or zero.
std::uint64_t parse_memory_size(const std::string& text);

// Throws MemoryLimitError "<what> needs N bytes (…), over the memory limit of L bytes (…, from
// <source>)" when `bytes` exceeds memory_limit(). `what` names the shape, e.g. "the 30000×30000
// Hessian of a 1×30000 layer".
void require_memory(std::uint64_t bytes, const std::string& what);

// rows × cols × item bytes, saturating at UINT64_MAX instead of overflowing.
std::uint64_t bytes_for(std::uint64_t rows, std::uint64_t cols, std::uint64_t item);

}  // namespace qround
