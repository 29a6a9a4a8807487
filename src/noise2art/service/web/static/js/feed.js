// Feed (/feed): images picked from what you like. Until the server has the feed API (GET
// answers 404), the page says so.
import { api, fail } from "./common.js";
import { bindCards, makeCard } from "./cards.js";

export const FEED = "/api/v1/feed";
const grid = document.getElementById("results");

async function start() {
  bindCards(grid);
  try {
    const { data } = await api(FEED);
    for (const image of (data && data.images) || []) grid.append(makeCard(image));
  } catch (err) {
    if (err.status === 404 || err.status === 405) document.getElementById("pending").hidden = false;
    else fail(err);
  }
}
start();
