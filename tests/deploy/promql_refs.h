#pragma once
// What a PromQL expression refers to, found without a full parser: metric
// names (identifiers that are not functions, aggregations or keywords),
// label names in matchers ({name="..."}) and in grouping clauses
// (by/without/on/ignoring/group_left/group_right (...)). String literals,
// range/offset durations and Grafana variables ($job, ${x}, $__rate_interval)
// are skipped. Used to check that a dashboard queries only exported metrics.
#include <set>
#include <string>

namespace cnx::testing {

struct PromqlRefs {
  std::set<std::string> metrics;
  std::set<std::string> labels;  // matcher and grouping label names
};

// Throws cnx::CheckError for an unterminated string, brace or bracket.
PromqlRefs promql_refs(const std::string& expr);

}  // namespace cnx::testing
