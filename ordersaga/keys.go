package ordersaga

import "strconv"

// Redis keys of each function's domain. Each function writes only under
// its own prefix (its Redis ACL user is confined to it); saga records are
// the saga store's.
//
// On a Redis Cluster the keys one effect writes must share a hash slot.
// An order, a balance and the outbox are one key per effect: each hashes
// on its own, so users' balances and orders spread over the cluster. The
// inventory's effects take and put back every SKU of an order in one
// script, all or nothing, so all stock shares the hash tag {stock}: the
// inventory is one slot, on one node — one script per saga (two with a
// release), a small share of a saga's Redis work. A catalog too large for
// one node would be split by a domain key an order cannot cross (a
// warehouse: "inventory:{stock:<warehouse>}:<sku>"). The catalogue's
// prices are read with one MGET, so they share the tag {catalog}.
func OrderKey(orderID string) string { return "order:o:" + orderID }
func CatalogKey(sku string) string   { return "order:{catalog}:" + sku }
func BalanceKey(userID int32) string { return "payment:balance:" + strconv.Itoa(int(userID)) }
func StockKey(sku string) string     { return "inventory:{stock}:" + sku }
func UserKey(userID int32) string    { return "users:user:" + strconv.Itoa(int(userID)) }

// OutboxKey is the notification outbox stream.
const OutboxKey = "notification:outbox"
