package saga

import "fmt"

// Effect is a step's domain write, in Lua, which the Store runs inside the
// step's atomic transition: the write happens exactly when the saga moves.
// Declare it once, as a package-level value, and call it from an action:
//
//	var charge = saga.Effect{Name: "payment.charge", Lua: `
//	local balance = tonumber(redis.call('GET', keys.balance) or '')
//	if balance == nil then return 'unknown account' end
//	if balance < tonumber(args.amount) then return 'insufficient funds' end
//	redis.call('DECRBY', keys.balance, args.amount)
//	`}
//
//	Effect: charge.Call().Key("balance", balanceKey).Arg("amount", total)
//
// The body sees its keys and arguments by name: keys.<name> and
// args.<name> are strings, or Lua arrays for names given a list (KeyList,
// ArgList; an empty list is nil: write "keys.x or {}"). It returns nothing (or true) on success, or a non-empty string: the
// business failure reason, which selects the failure outcome. A failing
// effect must check before it writes: Redis does not roll scripts back. It
// touches only the keys it is given (Redis Cluster and ACLs depend on it).
// Bodies are constants of the program, never assembled from input; the
// Store loads each once, by name.
type Effect struct {
	Name string
	Lua  string
}

// Call starts a call of the effect; add its keys and arguments by name.
func (e *Effect) Call() *Call { return &Call{Effect: e} }

// Call is an Effect with its keys and arguments.
type Call struct {
	Effect *Effect
	Keys   []Named // in the order given
	Args   []Named
}

// Named is one named key or argument: one value, or a list (Lua array).
type Named struct {
	Name   string
	Values []string
	List   bool
}

// Key adds a key named name.
func (c *Call) Key(name, key string) *Call {
	c.Keys = append(c.Keys, Named{Name: name, Values: []string{key}})
	return c
}

// KeyList adds a list of keys named name (keys.<name> is a Lua array).
func (c *Call) KeyList(name string, keys ...string) *Call {
	c.Keys = append(c.Keys, Named{Name: name, Values: keys, List: true})
	return c
}

// Arg adds an argument named name (fmt.Sprint of v).
func (c *Call) Arg(name string, v any) *Call {
	c.Args = append(c.Args, Named{Name: name, Values: []string{fmt.Sprint(v)}})
	return c
}

// ArgList adds a list of arguments named name (args.<name> is a Lua array).
func (c *Call) ArgList(name string, vs ...any) *Call {
	n := Named{Name: name, List: true, Values: make([]string, len(vs))}
	for i, v := range vs {
		n.Values[i] = fmt.Sprint(v)
	}
	c.Args = append(c.Args, n)
	return c
}

// KeyValues returns every key of the call, in order.
func (c *Call) KeyValues() []string {
	var out []string
	for _, k := range c.Keys {
		out = append(out, k.Values...)
	}
	return out
}
