#include "tests/deploy/promql_refs.h"

#include <cctype>

#include "common/check.h"

namespace cnx::testing {

namespace {

bool ident_start(char c) {
  return std::isalpha(static_cast<unsigned char>(c)) || c == '_' || c == ':';
}
bool ident_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == ':';
}

const std::set<std::string>& keywords() {
  static const std::set<std::string> k = {
      // aggregations
      "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk", "quantile",
      // binary operators and modifiers
      "and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right",
      // literals
      "inf", "nan", "Inf", "NaN"};
  return k;
}

bool is_grouping(const std::string& w) {
  return w == "by" || w == "without" || w == "on" || w == "ignoring" || w == "group_left" || w == "group_right";
}

size_t skip_string(const std::string& e, size_t i) {
  const char q = e[i];
  for (size_t j = i + 1; j < e.size(); ++j) {
    if (e[j] == '\\' && q != '`') {
      ++j;
    } else if (e[j] == q) {
      return j + 1;
    }
  }
  CNX_CHECK(false, "PromQL: unterminated string starting at ", i, " in: ", e);
  return e.size();
}

size_t skip_space(const std::string& e, size_t i) {
  while (i < e.size() && std::isspace(static_cast<unsigned char>(e[i]))) ++i;
  return i;
}

size_t read_ident(const std::string& e, size_t i, std::string* out) {
  size_t j = i;
  while (j < e.size() && ident_char(e[j])) ++j;
  *out = e.substr(i, j - i);
  return j;
}

// Label names in a parenthesised list starting at e[i] == '('.
size_t read_label_list(const std::string& e, size_t i, std::set<std::string>* labels) {
  const size_t close = e.find(')', i);
  CNX_CHECK(close != std::string::npos, "PromQL: unterminated label list at ", i, " in: ", e);
  for (size_t j = i + 1; j < close;) {
    if (ident_start(e[j])) {
      std::string w;
      j = read_ident(e, j, &w);
      labels->insert(w);
    } else {
      ++j;
    }
  }
  return close + 1;
}

// Matchers inside {...} starting at e[i] == '{'.
size_t read_matchers(const std::string& e, size_t i, std::set<std::string>* labels) {
  size_t j = i + 1;
  for (;;) {
    j = skip_space(e, j);
    CNX_CHECK(j < e.size(), "PromQL: unterminated '{' at ", i, " in: ", e);
    if (e[j] == '}') return j + 1;
    if (e[j] == '"' || e[j] == '\'' || e[j] == '`') {
      j = skip_string(e, j);
    } else if (ident_start(e[j])) {
      std::string w;
      j = read_ident(e, j, &w);
      labels->insert(w);
    } else {
      ++j;  // operators and commas
    }
  }
}

}  // namespace

PromqlRefs promql_refs(const std::string& e) {
  PromqlRefs refs;
  size_t i = 0;
  while (i < e.size()) {
    const char c = e[i];
    if (c == '"' || c == '\'' || c == '`') {
      i = skip_string(e, i);
    } else if (c == '{') {
      i = read_matchers(e, i, &refs.labels);
    } else if (c == '[') {
      const size_t close = e.find(']', i);
      CNX_CHECK(close != std::string::npos, "PromQL: unterminated '[' at ", i, " in: ", e);
      i = close + 1;
    } else if (c == '$') {
      // Grafana variable: $name, ${name...}
      ++i;
      if (i < e.size() && e[i] == '{') {
        const size_t close = e.find('}', i);
        CNX_CHECK(close != std::string::npos, "PromQL: unterminated '${' in: ", e);
        i = close + 1;
      } else {
        while (i < e.size() && ident_char(e[i])) ++i;
      }
    } else if (std::isdigit(static_cast<unsigned char>(c)) ||
               (c == '.' && i + 1 < e.size() && std::isdigit(static_cast<unsigned char>(e[i + 1])))) {
      // number or duration (1e3, 0x1f, 5m, 1h30m)
      while (i < e.size() && (std::isalnum(static_cast<unsigned char>(e[i])) || e[i] == '.')) ++i;
    } else if (ident_start(c)) {
      std::string w;
      i = read_ident(e, i, &w);
      const size_t next = skip_space(e, i);
      const bool call = next < e.size() && e[next] == '(';
      if (is_grouping(w)) {
        if (call) i = read_label_list(e, next, &refs.labels);
      } else if (!call && keywords().count(w) == 0) {
        refs.metrics.insert(w);
      }
    } else {
      ++i;
    }
  }
  return refs;
}

}  // namespace cnx::testing
