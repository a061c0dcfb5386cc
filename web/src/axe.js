// axe-core for the browser tests only (no page loads it): the tests add this module and
// run window.axe.run().
import axe from "axe-core";

window.axe = axe;
