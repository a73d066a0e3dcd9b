// examples/gpt/data.hpp — the mini-GPT's text: byte tokenizer, corpus, split and batches.
//
// What this is: a byte-level tokenizer (every byte is a token, vocab 256, nothing to train),
// a corpus loader (one text file, or every text file of a directory in name order; the
// fortune files are the default corpus), a deterministic train/validation split (the last
// N% of the bytes) and a batch sampler that cuts (B, T+1)-byte windows into tokens (B, T) and
// targets (B, T) (the same window shifted by one).
// What it is not: a BPE tokenizer, a streaming loader for corpora larger than memory, or a
// data-loader thread; at a few MiB of text, reading it all once is the simple right answer.
//
// Determinism: a window's start is a pure function of (seed, global sample index), never of
// the rank count or of earlier calls. A training step with R ranks, micro-batch B and A
// accumulation steps uses the global sample indices
//
//     global = ((step * A + a) * R + r) * B + b        a < A, r < R, b < B
//
// so one step covers the indices [step*A*R*B, (step+1)*A*R*B) whatever R, B and A are: the
// same global batch as one rank with micro-batch R*B*A and no accumulation (only the order in
// which the samples are visited differs, and a mean over the batch does not see the order).
#pragma once

#include "random.hpp"

#include <strata/core/error.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace gpt {

// ---------------------------------------------------------------------------------------------
// Tokenizer: token = byte value
// ---------------------------------------------------------------------------------------------

inline constexpr int byte_vocab = 256;

/// Text -> tokens (n,), one per byte, in 0..255.
inline std::vector<int> encode(std::string_view text) {
  std::vector<int> out(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) out[i] = static_cast<unsigned char>(text[i]);
  return out;
}

/// Tokens -> text. A token outside 0..255 is a caller bug (a model with vocab > 256 sampled
/// past the byte range, say), so it is an error naming the token and where it was.
inline std::string decode(const int* tokens, std::size_t n) {
  std::string out(n, '\0');
  for (std::size_t i = 0; i < n; ++i) {
    if (tokens[i] < 0 || tokens[i] >= byte_vocab)
      throw std::invalid_argument("decode: token " + std::to_string(tokens[i]) + " at position " +
                                  std::to_string(i) + " is not a byte (0..255)");
    out[i] = static_cast<char>(static_cast<unsigned char>(tokens[i]));
  }
  return out;
}
inline std::string decode(const std::vector<int>& tokens) {
  return decode(tokens.data(), tokens.size());
}

/// One token as it should appear on a console: printable ASCII, newline and tab as they are,
/// every other byte as \xHH. A model that has learnt only part of UTF-8 emits broken
/// sequences, and a terminal would show them as garbage or swallow them; this shows the bytes.
inline std::string printable(int token) {
  if (token == '\n' || token == '\t' || (token >= 0x20 && token < 0x7f))
    return std::string(1, static_cast<char>(token));
  char buf[8];
  std::snprintf(buf, sizeof buf, "\\x%02x", static_cast<unsigned>(token) & 0xffu);
  return buf;
}
inline std::string printable(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) out += printable(static_cast<unsigned char>(c));
  return out;
}

// ---------------------------------------------------------------------------------------------
// Corpus
// ---------------------------------------------------------------------------------------------

inline constexpr const char* default_corpus_dir = "/usr/share/games/fortunes";
inline constexpr const char* fallback_corpus_dir = "/usr/share/common-licenses";

/// All the text, concatenated, and where it came from.
struct corpus {
  std::string source;               // the path that was loaded (file or directory)
  std::vector<std::string> files;   // the files read, in the order their bytes appear
  std::vector<std::uint8_t> bytes;  // (n,) every file's bytes, each ending in '\n'
};

namespace data_detail {

inline std::vector<std::uint8_t> read_file_bytes(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw strata::io_error("corpus: cannot open '" + p.string() + "' for reading");
  std::vector<std::uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                                  std::istreambuf_iterator<char>());
  if (in.bad()) throw strata::io_error("corpus: reading '" + p.string() + "' failed");
  return bytes;
}

inline bool ends_with(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

/// A NUL byte marks a binary file; text files (ASCII, UTF-8, Latin-1) have none.
inline bool looks_like_text(const std::vector<std::uint8_t>& bytes) {
  return std::find(bytes.begin(), bytes.end(), std::uint8_t{0}) == bytes.end();
}

/// What a file that is not regular is, for messages ("a character device").
inline const char* file_kind(std::filesystem::file_type t) {
  using ft = std::filesystem::file_type;
  switch (t) {
    case ft::directory: return "a directory";
    case ft::symlink: return "a symbolic link";
    case ft::block: return "a block device";
    case ft::character: return "a character device";
    case ft::fifo: return "a FIFO (named pipe)";
    case ft::socket: return "a socket";
    default: return "not a regular file";
  }
}

/// The bytes of the text file `p` given by name (a symlink to one is followed): a regular file
/// without a NUL byte, the same rule as for the files of a directory. Anything else is an
/// io_error naming the path and why, raised before reading (a device such as /dev/zero would
/// never end) or, for a binary, at its first NUL byte.
inline std::vector<std::uint8_t> read_text_file(const std::filesystem::path& p,
                                                std::filesystem::file_status st) {
  if (!std::filesystem::is_regular_file(st))
    throw strata::io_error("corpus: '" + p.string() + "' is " + file_kind(st.type()) +
                           ", not a regular text file; give a text file or a directory of them");
  std::vector<std::uint8_t> bytes = read_file_bytes(p);
  const auto nul = std::find(bytes.begin(), bytes.end(), std::uint8_t{0});
  if (nul != bytes.end())
    throw strata::io_error("corpus: '" + p.string() + "' is not text: byte " +
                           std::to_string(nul - bytes.begin()) + " of " +
                           std::to_string(bytes.size()) +
                           " is NUL (a binary file?); give a text file or a directory of them");
  return bytes;
}

}  // namespace data_detail

/// The default corpus: the fortune files when installed, else the licenses every Debian has.
inline std::string default_corpus_path() {
  std::error_code ec;
  if (std::filesystem::is_directory(default_corpus_dir, ec)) return default_corpus_dir;
  if (std::filesystem::is_directory(fallback_corpus_dir, ec)) return fallback_corpus_dir;
  throw strata::io_error(std::string("corpus: neither the default corpus '") + default_corpus_dir +
                         "' (Debian package fortunes) nor the fallback '" + fallback_corpus_dir +
                         "' exists; give a text file or directory");
}

/// Loads `path`: a text file (a symlink to one is followed), or a directory, of which every
/// regular text file is read in name order. Text means a regular file without a NUL byte: a
/// file given by name that is not (a device such as /dev/zero, a FIFO, a binary such as
/// /bin/ls) is an io_error saying which. In a directory such files are skipped, and so are
/// symlinks (the fortune *.u8 links and the licenses' GPL -> GPL-3 would read the same text
/// twice) and the fortune index files *.dat / *.u8. A file whose last byte is not '\n' gets
/// one, so two files never run into one line.
inline corpus load_corpus(const std::string& path) {
  namespace fs = std::filesystem;
  corpus c;
  c.source = path;
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (ec || !fs::exists(st)) throw strata::io_error("corpus: '" + path + "' does not exist");

  auto append = [&](const fs::path& p, std::vector<std::uint8_t> bytes) {
    if (bytes.empty()) return;
    if (bytes.back() != '\n') bytes.push_back('\n');
    c.bytes.insert(c.bytes.end(), bytes.begin(), bytes.end());
    c.files.push_back(p.string());
  };

  if (fs::is_directory(st)) {
    std::vector<fs::path> names;
    for (const fs::directory_entry& e : fs::directory_iterator(path, ec)) {
      const std::string name = e.path().filename().string();
      if (e.is_symlink() || !e.is_regular_file()) continue;
      if (data_detail::ends_with(name, ".dat") || data_detail::ends_with(name, ".u8")) continue;
      names.push_back(e.path());
    }
    if (ec) throw strata::io_error("corpus: cannot list directory '" + path + "': " + ec.message());
    std::sort(names.begin(), names.end());
    for (const fs::path& p : names) {
      std::vector<std::uint8_t> bytes = data_detail::read_file_bytes(p);
      if (data_detail::looks_like_text(bytes)) append(p, std::move(bytes));
    }
    if (c.bytes.empty())
      throw strata::io_error("corpus: directory '" + path +
                             "' holds no non-empty text file (symlinks, *.dat, *.u8 and binary "
                             "files are skipped)");
  } else {
    append(path, data_detail::read_text_file(path, st));
    if (c.bytes.empty()) throw strata::io_error("corpus: file '" + path + "' is empty");
  }
  return c;
}

// ---------------------------------------------------------------------------------------------
// Train / validation split
// ---------------------------------------------------------------------------------------------

struct text_split {
  std::string source;               // for error messages
  std::vector<std::uint8_t> train;  // (n - n_val,) the first bytes
  std::vector<std::uint8_t> val;    // (n_val,) the last floor(n * val_fraction) bytes
};

/// The last floor(n * val_fraction) bytes are validation, the rest training. The split is a
/// cut, not a shuffle: with overlapping windows, a shuffled split would put the same text on
/// both sides.
inline text_split split_corpus(const corpus& c, double val_fraction = 0.10) {
  if (!(val_fraction >= 0.0 && val_fraction < 1.0))
    throw strata::config_error("split: validation fraction " + std::to_string(val_fraction) +
                               " of corpus '" + c.source + "' is not in [0, 1)");
  const std::size_t n = c.bytes.size();
  const auto n_val = static_cast<std::size_t>(static_cast<double>(n) * val_fraction);
  text_split s;
  s.source = c.source;
  s.train.assign(c.bytes.begin(), c.bytes.end() - static_cast<std::ptrdiff_t>(n_val));
  s.val.assign(c.bytes.end() - static_cast<std::ptrdiff_t>(n_val), c.bytes.end());
  return s;
}

// ---------------------------------------------------------------------------------------------
// Batches
// ---------------------------------------------------------------------------------------------

/// Cuts windows of T+1 bytes out of one split. Holds a pointer to the bytes: the split must
/// outlive the sampler. Every query is const and pure, so rank threads may share one sampler.
class batch_sampler {
public:
  batch_sampler(std::vector<std::uint8_t>&&, int, std::uint64_t, std::string) = delete;  // would dangle

  /// `what` names the data in errors ("train split of /usr/share/games/fortunes").
  batch_sampler(const std::vector<std::uint8_t>& data, int T, std::uint64_t seed, std::string what)
      : data_(&data), T_(T), seed_(seed), what_(std::move(what)) {
    if (T < 1) throw strata::config_error("batch sampler: sequence length T = " +
                                          std::to_string(T) + " for " + what_ + " must be >= 1");
    if (data.size() < static_cast<std::size_t>(T) + 1)
      throw strata::config_error("batch sampler: " + what_ + " has " + std::to_string(data.size()) +
                                 " bytes, fewer than the T+1 = " + std::to_string(T + 1) +
                                 " one window needs; use a larger corpus or a shorter T");
  }

  int seq_len() const noexcept { return T_; }
  std::size_t size() const noexcept { return data_->size(); }

  /// Start of the window of global sample `index`: uniform over the n - T possible starts,
  /// a pure function of (seed, index).
  std::size_t window_start(std::uint64_t index) const noexcept {
    const std::uint64_t starts = data_->size() - static_cast<std::size_t>(T_);
    const std::uint64_t h = splitmix64(splitmix64(seed_) ^ index);
    // Lemire's multiply-shift maps h to [0, starts) without the modulo's division.
    return static_cast<std::size_t>((static_cast<unsigned __int128>(h) * starts) >> 64);
  }

  /// One window: tokens (T,) = bytes [s, s+T), targets (T,) = bytes [s+1, s+T+1).
  void sample(std::uint64_t index, int* tokens, int* targets) const noexcept {
    const std::uint8_t* w = data_->data() + window_start(index);
    for (int t = 0; t < T_; ++t) {
      tokens[t] = w[t];
      targets[t] = w[t + 1];
    }
  }

  /// The micro-batch of rank r (of R) at accumulation step a (of A) of training step `step`:
  /// row b is global sample ((step*A + a)*R + r)*B + b. tokens, targets: (B, T).
  void batch(std::uint64_t step, int a, int A, int r, int R, int B, int* tokens,
             int* targets) const {
    if (A < 1 || R < 1 || B < 1 || a < 0 || a >= A || r < 0 || r >= R)
      throw strata::config_error("batch sampler: bad batch coordinates for " + what_ + ": a=" +
                                 std::to_string(a) + " of A=" + std::to_string(A) + ", r=" +
                                 std::to_string(r) + " of R=" + std::to_string(R) + ", B=" +
                                 std::to_string(B));
    const std::uint64_t first = ((step * A + static_cast<std::uint64_t>(a)) * R +
                                 static_cast<std::uint64_t>(r)) * B;
    for (int b = 0; b < B; ++b)
      sample(first + static_cast<std::uint64_t>(b), tokens + std::size_t(b) * T_,
             targets + std::size_t(b) * T_);
  }

  /// Evaluation windows: window i starts at i*T, consecutive and non-overlapping, so a loss
  /// over windows [0, eval_windows()) sees every byte once as a target, independent of seed.
  std::size_t eval_windows() const noexcept { return (data_->size() - 1) / std::size_t(T_); }

  /// Rows b of evaluation batch `index` are evaluation windows index*B + b (wrapping around
  /// eval_windows()). tokens, targets: (B, T).
  void eval_batch(std::uint64_t index, int B, int* tokens, int* targets) const noexcept {
    const std::size_t windows = eval_windows();
    for (int b = 0; b < B; ++b) {
      const std::size_t w = (index * std::uint64_t(B) + std::uint64_t(b)) % windows;
      const std::uint8_t* p = data_->data() + w * std::size_t(T_);
      for (int t = 0; t < T_; ++t) {
        tokens[std::size_t(b) * T_ + t] = p[t];
        targets[std::size_t(b) * T_ + t] = p[t + 1];
      }
    }
  }

private:
  const std::vector<std::uint8_t>* data_;
  int T_;
  std::uint64_t seed_;
  std::string what_;
};

}  // namespace gpt
