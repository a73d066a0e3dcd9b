// examples/snippets/check.hpp — the one helper the documentation snippets share.
//
// Each file in this folder is a code block of README.md or docs/*.md (the lines between
// `// snippet-begin` and `// snippet-end`, or the whole file without them), made into a program
// that the test `snippet_<name>` builds and runs, and that `snippets_in_docs` compares with the
// page (scripts/snippets). The checks after the shown part are what the page promises; when
// one fails, the program says which and exits 1.
#pragma once

#include <cstdio>
#include <cstdlib>

namespace snippet {

inline void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "snippet check failed: %s\n", what);
    std::exit(1);
  }
}

}  // namespace snippet
