// Package query is the IoT Hub query language over device and module
// twins: a lexer, a recursive-descent parser into a checked AST, an
// evaluator with the language's typing rules (comparisons only between
// primitive values of one type; undefined matches nothing), aggregates
// with GROUP BY, and paging by a key-ordered cursor sealed into opaque
// continuation tokens.
package query
