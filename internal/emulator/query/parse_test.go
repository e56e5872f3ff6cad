package query

import (
	"strings"
	"testing"
)

// Each construct of the language parses to the query it means.
func TestParseConstructs(t *testing.T) {
	for _, tc := range []struct {
		src   string
		check func(q *Query) bool
	}{
		{"SELECT * FROM devices", func(q *Query) bool { return q.Star && q.From == Devices && q.Where == nil }},
		{"select * from DEVICES.MODULES", func(q *Query) bool { return q.Star && q.From == Modules }},
		{"SELECT * FROM devices.jobs", func(q *Query) bool { return q.From == Jobs }},
		{"SELECT TOP 5 * FROM devices", func(q *Query) bool { return q.Top == 5 && q.Star }},
		{"SELECT deviceId, properties.reported.x FROM devices", func(q *Query) bool {
			return len(q.Items) == 2 && q.Items[0].Name == "deviceId" && q.Items[1].Name == "x" && len(q.Items[1].Path.Segments) == 3
		}},
		{"SELECT deviceId AS id FROM devices", func(q *Query) bool { return q.Items[0].Name == "id" && q.Items[0].Aliased }},
		{"SELECT COUNT() AS n FROM devices", func(q *Query) bool { return q.Items[0].Agg == "COUNT" && q.Items[0].Name == "n" }},
		{"SELECT COUNT(), MAX(version) FROM devices", func(q *Query) bool {
			return q.Items[0].Name == "$1" && q.Items[1].Name == "$2" && q.Items[1].Agg == "MAX"
		}},
		{"SELECT tags.a AS a, AVG(x) AS m, SUM(x) AS s, MIN(x) AS lo, MAX(x) AS hi FROM devices.modules GROUP BY tags.a", func(q *Query) bool {
			return len(q.GroupBy) == 1 && q.Aggregated() && q.From == Modules
		}},
		{"SELECT * FROM devices WHERE a = 1 AND b != 2 OR NOT c <> 3", func(q *Query) bool {
			or, ok := q.Where.(*Binary)
			return ok && or.Op == "OR"
		}},
		{"SELECT * FROM devices WHERE a < 1 AND a > 0 AND a <= 1 AND a >= 0", func(q *Query) bool { return q.Where != nil }},
		{"SELECT * FROM devices WHERE x IN ['a', 'b', 1, true, null] AND y NIN [-2]", func(q *Query) bool {
			and := q.Where.(*Binary)
			in, nin := and.L.(*In), and.R.(*In)
			return len(in.List) == 5 && !in.Not && nin.Not && nin.List[0] == -2.0
		}},
		{"SELECT * FROM devices WHERE (a + 1) * 2 - b / 4 % 3 = -c", func(q *Query) bool {
			eq := q.Where.(*Binary)
			sub, ok := eq.L.(*Binary)
			return eq.Op == "=" && ok && sub.Op == "-"
		}},
		{`SELECT * FROM devices WHERE a = 'it\'s' OR a = "q\"\u0041\\"`, func(q *Query) bool {
			or := q.Where.(*Binary)
			return or.L.(*Binary).R.(*Literal).Value == "it's" && or.R.(*Binary).R.(*Literal).Value == `q"A\`
		}},
		{`SELECT * FROM devices WHERE s = "\u0041\n"`, func(q *Query) bool { return q.Where.(*Binary).R.(*Literal).Value == "A\n" }},
		{"SELECT * FROM devices WHERE n = 0x1F AND m = 1.5e2 AND k = .5", func(q *Query) bool {
			l := q.Where.(*Binary).L.(*Binary).L.(*Binary).R.(*Literal)
			return l.Value == 31.0
		}},
		{"SELECT * FROM devices WHERE IS_DEFINED(tags.x) AND is_null(tags.y) AND startswith(deviceId, 'a')", func(q *Query) bool {
			return q.Where.(*Binary).R.(*Call).Name == "STARTSWITH"
		}},
		{"SELECT * FROM devices WHERE properties.desired.$version > 1 AND tags['odd-name'][0] = 1", func(q *Query) bool {
			p := q.Where.(*Binary).L.(*Binary).L.(*Path)
			return p.Segments[2] == "$version"
		}},
		{"SELECT * FROM devices.modules WHERE devices.modules.moduleId = 'm'", func(q *Query) bool {
			p := q.Where.(*Binary).L.(*Path)
			return len(p.Segments) == 1 && p.Segments[0] == "moduleId"
		}},
		{"SELECT * FROM devices WHERE a = undefined", func(q *Query) bool { return isUndefined(q.Where.(*Binary).R.(*Literal).Value) }},
		{"SELECT * FROM devices WHERE [1, 2] = x", nil},
	} {
		q, err := Parse(tc.src)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.src, err)
			continue
		}
		if tc.check != nil && !tc.check(q) {
			t.Errorf("Parse(%q) = %+v: not what it means", tc.src, q)
		}
	}
}

// Each refusal names the position and the token.
func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		src, want string
	}{
		{"", "Line 1:1 unexpected end of query, expected SELECT"},
		{"UPDATE devices", "Line 1:1 unexpected 'UPDATE', expected SELECT"},
		{"SELECT * FROM devices ORDER BY deviceId", "Line 1:23 ORDER BY is not supported"},
		{"SELECT * FROM devices d", "Line 1:23 unexpected 'd': the collection cannot have an alias"},
		{"SELECT * FROM devices JOIN devices.modules", "Line 1:23 joins are not supported"},
		{"SELECT * FROM devices, devices.modules", "Line 1:22 joins are not supported"},
		{"SELECT * FROM twins", "Line 1:15 unexpected 'twins', expected devices, devices.modules or devices.jobs"},
		{"SELECT * FROM devices.things", "Line 1:23 unexpected 'things'"},
		{"SELECT * FROM devices WHERE", "Line 1:28 unexpected end of query, expected an expression"},
		{"SELECT * FROM devices WHERE a = ", "Line 1:33 unexpected end of query, expected an expression"},
		{"SELECT * FROM devices WHERE a = 1 b", "Line 1:35 unexpected 'b' after the end of the query"},
		{"SELECT * FROM devices WHERE (a = 1", "Line 1:35 unexpected end of query, expected ')'"},
		{"SELECT * FROM devices WHERE a = 'open", "Line 1:33 string literal is not closed"},
		{`SELECT * FROM devices WHERE a = '\q'`, "Line 1:35 unknown escape \\q"},
		{"SELECT * FROM devices WHERE a = #", "Line 1:33 unexpected character '#'"},
		{"SELECT * FROM devices WHERE a = 12ab", `Line 1:33 "12ab" is not a number`},
		{"SELECT * FROM devices WHERE a = 0xZZ", `Line 1:33 "0xZZ" is not a hexadecimal number`},
		{"SELECT * FROM devices WHERE a LIKE 'x%'", "Line 1:31 LIKE is not supported"},
		{"SELECT * FROM devices WHERE a NOT IN [1]", "Line 1:31 NOT IN is not supported: use NIN"},
		{"SELECT * FROM devices WHERE a IN b", "Line 1:34 unexpected 'b', expected '['"},
		{"SELECT * FROM devices WHERE a IN [b]", "Line 1:35 unexpected 'b', expected a constant"},
		{"SELECT * FROM devices WHERE 1 < a < 2", "Line 1:35 unexpected '<': comparisons do not chain"},
		{"SELECT * FROM devices WHERE NOSUCH(a)", "Line 1:29 unknown function NOSUCH"},
		{"SELECT * FROM devices WHERE IS_DEFINED(a, b)", "Line 1:29 IS_DEFINED takes 1 argument, not 2"},
		{"SELECT * FROM devices WHERE CONCAT('a')", "Line 1:29 CONCAT takes at least 2 arguments, not 1"},
		{"SELECT * FROM devices WHERE COUNT() > 1", "Line 1:29 COUNT is an aggregate: it is only allowed in SELECT"},
		{"SELECT TOP 0 * FROM devices", "Line 1:12 TOP needs a positive whole number, not '0'"},
		{"SELECT TOP 1.5 * FROM devices", "Line 1:12 TOP needs a positive whole number"},
		{"SELECT DISTINCT a FROM devices", "Line 1:8 SELECT DISTINCT is not supported"},
		{"SELECT a + 1 FROM devices", "Line 1:10 unexpected '+': SELECT takes property paths and aggregates"},
		{"SELECT COUNT(x) FROM devices", "Line 1:14 unexpected 'x', expected ')': COUNT() takes no argument"},
		{"SELECT a FROM devices GROUP BY b", "Line 1:8 'a' is neither aggregated nor in GROUP BY"},
		{"SELECT a, COUNT() FROM devices", "Line 1:8 'a' is neither aggregated nor in GROUP BY"},
		{"SELECT * FROM devices GROUP BY a", "GROUP BY needs a SELECT list"},
		{"SELECT deviceId FROM devices.jobs", "devices.jobs support only SELECT *"},
		{"SELECT * FROM devices GROUP a", "Line 1:29 unexpected 'a', expected BY after GROUP"},
		{"SELECT * FROM devices WHERE a = 1 WHERE b = 2", "Line 1:35 unexpected 'WHERE': clauses go in the order"},
		{"SELECT *\nFROM devices\nWHERE a = = 1", "Line 3:11 unexpected '=', expected an expression"},
		{"SELECT a AS FROM devices", "Line 1:13 unexpected 'FROM', expected a name after AS"},
		{"SELECT tags[0] FROM devices", "needs a name: add AS name"},
		{"SELECT * FROM devices WHERE a = \xff", "not valid UTF-8"},
		{"SELECT * FROM devices WHERE " + strings.Repeat("a", MaxLength), "characters long (at most 8192)"},
	} {
		_, err := Parse(tc.src)
		if err == nil {
			t.Errorf("Parse(%q) succeeded, want an error containing %q", tc.src, tc.want)
			continue
		}
		if _, ok := err.(*Error); !ok || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q) = %v, want an *Error containing %q", tc.src, err, tc.want)
		}
	}
}
