package query

// Collection is what a query reads: the FROM clause.
type Collection int

// The collections of the IoT Hub query language.
const (
	Devices Collection = iota // device twins
	Modules                   // module twins (devices.modules)
	Jobs                      // per-device job details (devices.jobs)
)

func (c Collection) String() string {
	switch c {
	case Modules:
		return "devices.modules"
	case Jobs:
		return "devices.jobs"
	}
	return "devices"
}

// Query is a parsed and checked query.
type Query struct {
	Top     int // 0: no TOP
	Star    bool
	Items   []Item // projections when not Star
	From    Collection
	Where   Expr   // nil: every document
	GroupBy []Path // nil: no grouping
}

// Aggregated reports whether the query yields aggregate rows.
func (q *Query) Aggregated() bool {
	if len(q.GroupBy) > 0 {
		return true
	}
	for _, it := range q.Items {
		if it.Agg != "" {
			return true
		}
	}
	return false
}

// Item is one projection: a path, or an aggregate over a path (COUNT has
// none), with the name it gets in the result.
type Item struct {
	Path Path   // the projected path, or the aggregate's argument
	Agg  string // "", COUNT, AVG, SUM, MIN or MAX
	Name string // alias, or the path's last member, or $1, $2 … for an aggregate
	// Aliased is set when Name comes from AS; otherwise a projected
	// member is named as the document spells it.
	Aliased bool
}

// Expr is an expression of a WHERE clause.
type Expr interface{ exprPos() Pos }

// Literal is a constant: nil (null), bool, float64, string, []any, or
// undefined.
type Literal struct {
	Value any
	At    Pos
}

// Path is a member path into the document, e.g. properties.reported.x;
// a segment may also be an array index (float64).
type Path struct {
	Segments []any // string or float64 (index)
	At       Pos
}

// Unary is NOT x, -x or +x.
type Unary struct {
	Op string
	X  Expr
	At Pos
}

// Binary is x op y for a logical, comparison or arithmetic operator.
type Binary struct {
	Op   string // AND OR = != < > <= >= + - * / %
	L, R Expr
	At   Pos
}

// In is x IN [..] or x NIN [..].
type In struct {
	X    Expr
	List []any // constants
	Not  bool
	At   Pos
}

// Call is a function call, the name in upper case.
type Call struct {
	Name string
	Args []Expr
	At   Pos
}

// ArrayExpr is an array built of expressions, [a, b].
type ArrayExpr struct {
	Elems []Expr
	At    Pos
}

func (e *Literal) exprPos() Pos   { return e.At }
func (e *Path) exprPos() Pos      { return e.At }
func (e *Unary) exprPos() Pos     { return e.At }
func (e *Binary) exprPos() Pos    { return e.At }
func (e *In) exprPos() Pos        { return e.At }
func (e *Call) exprPos() Pos      { return e.At }
func (e *ArrayExpr) exprPos() Pos { return e.At }
