"""Writes the example corpus: 20 informative paragraphs and 20 web-crawl junk documents.

Each line of the JSON Lines output has `id` ("ex-001"...), `text` and `label`
("informative" or "junk"), so a demo can check that Ask-LLM ranks the informative ones first.
Deterministic: same output on every run.

  python examples/make_example_corpus.py [--output examples/corpus.jsonl]
"""
import argparse
import json
import os
import random

INFORMATIVE = [
    # Science
    "Photosynthesis is the process by which green plants, algae and some bacteria turn light "
    "into chemical energy. Inside the chloroplasts of a leaf, the pigment chlorophyll absorbs "
    "mostly red and blue light. That energy is used to split water molecules, which releases "
    "oxygen as a by-product, and to make two energy carriers, ATP and NADPH. In a second stage, "
    "called the Calvin cycle, the plant uses these carriers to fix carbon dioxide from the air "
    "into sugars. The sugars feed the plant's growth and, through food chains, almost every "
    "other living thing on Earth. Photosynthesis also explains why the atmosphere contains about "
    "twenty-one percent oxygen: before photosynthetic microbes appeared more than two billion "
    "years ago, there was almost none.",
    # History
    "Around 1440, Johannes Gutenberg, a goldsmith in Mainz, developed a printing press that used "
    "movable metal type. Each letter was cast separately, so a page could be assembled, printed "
    "hundreds of times and then taken apart so the letters could be reused. Combined with "
    "oil-based ink and a screw press adapted from wine making, the system made books far "
    "cheaper than hand-copied manuscripts. By 1500, presses in more than two hundred European "
    "cities had produced millions of volumes. Historians link the spread of printing to the "
    "Reformation, the Scientific Revolution and rising literacy, because ideas could now be "
    "copied exactly and distributed widely, and scholars in different countries could read the "
    "same text and argue about it.",
    # How-to
    "To bake a simple loaf of bread, mix 500 grams of bread flour, 10 grams of salt and 7 grams "
    "of dried yeast in a large bowl, then add about 320 millilitres of lukewarm water. Stir "
    "until no dry flour remains, tip the dough onto a clean surface and knead it for ten "
    "minutes, until it is smooth and springs back when pressed. Kneading develops gluten, the "
    "network of proteins that traps gas and lets the bread rise. Leave the dough covered in a "
    "warm place for about an hour, until it has doubled in size. Shape it into a loaf, let it "
    "rise for another thirty minutes, and bake at 220 degrees Celsius for thirty to thirty-five "
    "minutes. The loaf is done when it sounds hollow when tapped underneath.",
    # Mathematics
    "The Pythagorean theorem states that in a right triangle, the square of the hypotenuse, the "
    "side opposite the right angle, equals the sum of the squares of the other two sides: "
    "a squared plus b squared equals c squared. For example, a triangle with legs of length 3 "
    "and 4 has a hypotenuse of length 5, because 9 plus 16 equals 25. One classic proof places "
    "four copies of the triangle inside a square of side a plus b; the uncovered area can be "
    "arranged either as one square of side c or as two squares of sides a and b. The theorem "
    "lets us compute distances: the distance between two points on a plane is the square root "
    "of the sum of the squared differences of their coordinates.",
    # Medicine
    "Antibiotic resistance arises when bacteria evolve ways to survive drugs that used to kill "
    "them. In any large population of bacteria, a few cells may carry mutations or genes that "
    "let them pump out a drug, break it down or change the molecule it targets. When an "
    "antibiotic kills the susceptible cells, these survivors multiply and can pass resistance "
    "genes to other species through small rings of DNA called plasmids. Overuse speeds this up: "
    "taking antibiotics for viral infections such as colds, stopping a course early, and "
    "routine use in livestock all give resistant strains an advantage. Doctors now try to "
    "prescribe antibiotics only when a bacterial infection is likely, and to choose the "
    "narrowest drug that will work.",
    # Programming
    "Binary search finds a value in a sorted list by repeatedly halving the part of the list "
    "that could contain it. Start with two indices, low at the first element and high at the "
    "last. Look at the element in the middle: if it equals the target you are done; if it is "
    "smaller, the target can only be to the right, so move low past the middle; otherwise move "
    "high below the middle. Repeat until the value is found or low passes high. Because each "
    "step discards half of the remaining elements, a list of one million items needs at most "
    "about twenty comparisons, compared with up to a million for a linear scan. The list must "
    "be sorted first, and off-by-one errors in the index updates are a classic source of bugs.",
    # Economics
    "Inflation is a general rise in prices that reduces what a unit of money can buy. It is "
    "usually measured with a consumer price index, which tracks the cost of a fixed basket of "
    "goods and services such as food, rent, fuel and transport. Moderate, predictable inflation "
    "of around two percent a year is the target of many central banks, because falling prices "
    "can make people delay spending, while high inflation erodes savings and makes planning "
    "difficult. When inflation runs above target, a central bank typically raises its policy "
    "interest rate. Borrowing becomes more expensive, households and firms spend less, and "
    "demand cools. The effect takes time, often a year or more, which is why central banks try "
    "to act on forecasts rather than on current figures.",
    # Geography
    "The Nile flows north for about 6,650 kilometres from the highlands of East Africa to the "
    "Mediterranean Sea, making it one of the two longest rivers in the world. It has two main "
    "branches. The White Nile rises in the region of Lake Victoria and provides a steady flow "
    "all year, while the Blue Nile, which starts at Lake Tana in Ethiopia, carries most of the "
    "water and fertile silt during the summer monsoon. The two meet at Khartoum in Sudan. For "
    "thousands of years the annual flood deposited rich soil along the banks in Egypt, which "
    "allowed farming in an otherwise desert landscape and supported the growth of ancient "
    "Egyptian civilisation. The Aswan High Dam, completed in 1970, now controls the flood.",
    # Earth science
    "The theory of plate tectonics explains that the Earth's outer shell is broken into large "
    "rigid plates that move a few centimetres each year, about as fast as fingernails grow. "
    "The plates ride on the hotter, slowly flowing mantle beneath. Where plates pull apart, as "
    "along the Mid-Atlantic Ridge, magma rises and forms new ocean floor. Where they collide, "
    "one plate may sink beneath the other, creating deep ocean trenches and chains of volcanoes "
    "such as the Andes, or the crust may crumple upwards into mountain ranges like the "
    "Himalayas. Where plates slide past each other, as at the San Andreas Fault in California, "
    "stress builds up and is released in earthquakes. The theory unified evidence from fossils, "
    "rock magnetism and the matching shapes of continents.",
    # Medicine
    "Vaccines protect against infectious diseases by training the immune system before a real "
    "infection occurs. A vaccine contains a harmless form of a pathogen or one of its parts, "
    "for example an inactivated virus, a purified protein, or messenger RNA that instructs "
    "cells to make a single viral protein for a short time. The immune system responds by "
    "producing antibodies and memory cells that recognise that specific target. If the "
    "vaccinated person later meets the real pathogen, the memory cells react within days "
    "instead of weeks, usually preventing serious illness. When enough people in a community "
    "are immune, the pathogen struggles to spread, which also protects those who cannot be "
    "vaccinated, such as newborn babies. This effect is called herd immunity.",
    # Programming
    "A hash table stores key-value pairs so that looking up a key takes, on average, constant "
    "time regardless of how many items it holds. It keeps an array of buckets and uses a hash "
    "function to turn each key into an index in that array. To insert a pair, the table hashes "
    "the key and places the pair in the matching bucket; to look a key up, it hashes the key "
    "again and checks only that bucket. Two different keys can land in the same bucket, which "
    "is called a collision. Tables handle collisions by keeping a short list per bucket or by "
    "probing nearby slots. When the table becomes too full, it allocates a larger array and "
    "re-inserts every item. Python dictionaries and sets are built on hash tables.",
    # Mathematics
    "A prime number is a whole number greater than one whose only divisors are one and itself, "
    "such as 2, 3, 5, 7 and 11. Every whole number greater than one can be written as a product "
    "of primes in exactly one way, apart from the order of the factors; this is the fundamental "
    "theorem of arithmetic. More than two thousand years ago, Euclid proved that there are "
    "infinitely many primes. Suppose there were only finitely many, multiply them all together "
    "and add one. The new number leaves a remainder of one when divided by any prime on the "
    "list, so its prime factors must be missing from the list, which is a contradiction. "
    "Primes are central to modern cryptography, which relies on how hard it is to factor large "
    "numbers.",
    # Science
    "The water cycle describes how water moves between the oceans, the air and the land. Heat "
    "from the Sun evaporates water from seas, lakes and soil, and plants release more water "
    "vapour through their leaves in a process called transpiration. As warm moist air rises it "
    "cools, and the vapour condenses on tiny particles of dust to form clouds. When droplets "
    "grow heavy enough they fall as rain, snow or hail. Some of this precipitation runs off "
    "into rivers and back to the sea, some soaks into the ground to become groundwater, and "
    "some is stored for long periods in glaciers and ice sheets. The cycle redistributes heat "
    "around the planet and supplies the fresh water that people and ecosystems depend on.",
    # History
    "The Silk Road was a network of trade routes that connected China with Central Asia, the "
    "Middle East and the Mediterranean from around the second century BCE. Few merchants "
    "travelled its full length; instead, goods passed through many hands in caravan cities "
    "such as Samarkand and Kashgar. Chinese silk, porcelain and paper moved west, while horses, "
    "glassware, silver and wool moved east. The routes carried ideas as well as goods: Buddhism "
    "spread from India into China, and techniques such as papermaking reached the Islamic world "
    "and later Europe. Diseases travelled too, and the Black Death of the fourteenth century is "
    "thought to have spread partly along these routes. Sea trade gradually replaced the overland "
    "roads after the fifteenth century.",
    # How-to
    "To change a flat tyre safely, first stop on firm, level ground well away from traffic, "
    "switch on the hazard lights and apply the parking brake. Take out the spare wheel, the "
    "jack and the wheel wrench. Loosen each wheel nut about half a turn while the tyre is still "
    "on the ground, because the wheel would spin if it were lifted. Place the jack at the "
    "lifting point shown in the owner's manual and raise the car until the tyre is a few "
    "centimetres off the ground. Remove the nuts and the wheel, fit the spare, and tighten the "
    "nuts by hand. Lower the car, then tighten the nuts firmly in a star pattern so the wheel "
    "sits evenly. Check the spare's pressure as soon as possible.",
    # Economics
    "The principle of comparative advantage, set out by David Ricardo in 1817, explains why "
    "trade can benefit both sides even when one country is better at producing everything. "
    "What matters is opportunity cost: what a country gives up to make one more unit of a good. "
    "Suppose Portugal can make both wine and cloth with fewer workers than England, but its "
    "advantage is much larger in wine. If Portugal specialises in wine and England in cloth, "
    "and they trade, the two countries together produce more of both goods than if each made "
    "everything for itself. The theory does not say that everyone gains: workers in industries "
    "that shrink can lose out, which is why the benefits and costs of trade are still debated.",
    # Geography / ecology
    "The Amazon rainforest covers about five and a half million square kilometres of South "
    "America, most of it in Brazil, and is the largest tropical rainforest on Earth. It holds "
    "roughly one in ten of the world's known species, including thousands of kinds of trees, "
    "fish, birds and insects. The forest helps create its own rainfall: trees pull water from "
    "the soil and release it as vapour, which forms clouds that are carried westwards and fall "
    "again as rain. The Amazon also stores a vast amount of carbon in its trees and soils. "
    "Clearing land for cattle ranching, soy farming and logging has removed a large share of "
    "the original forest, and scientists warn that further loss could turn parts of it into "
    "dry savanna.",
    # Programming
    "Git is a distributed version control system: every developer has a full copy of the "
    "project's history on their own machine. Changes are recorded as commits, each of which "
    "stores a snapshot of the files, a message describing the change, and a pointer to the "
    "previous commit. Branches are lightweight labels that point to a commit, so developers can "
    "work on a feature in isolation and merge it back when it is ready. When two branches "
    "change the same lines, Git reports a conflict that a person must resolve. A typical "
    "workflow is to create a branch, make small commits with clear messages, push the branch "
    "to a shared server, and open a review so that colleagues can comment before it is merged.",
    # Astronomy
    "A star spends most of its life fusing hydrogen into helium in its core, and the energy "
    "released balances the inward pull of gravity. What happens when the hydrogen runs out "
    "depends on the star's mass. A star like the Sun swells into a red giant, sheds its outer "
    "layers and leaves behind a white dwarf, a hot core about the size of the Earth. A star of "
    "more than about eight solar masses fuses heavier elements until its core is mostly iron, "
    "which cannot release energy by fusion. The core then collapses in less than a second, and "
    "the outer layers are blown away in a supernova. The remnant becomes a neutron star or, if "
    "enough mass remains, a black hole from which not even light can escape.",
    # Medicine
    "Sleep is essential for both physical and mental health. Most adults need seven to nine "
    "hours a night, while teenagers need more. During sleep the brain cycles through light "
    "sleep, deep slow-wave sleep and rapid eye movement sleep several times. Deep sleep helps "
    "the body repair tissue and supports the immune system, and both deep and REM sleep play a "
    "role in consolidating memories. Regularly sleeping too little is linked to a higher risk "
    "of obesity, diabetes, heart disease and depression, and it impairs attention about as much "
    "as alcohol does. Good habits include keeping a regular schedule, avoiding caffeine late in "
    "the day, keeping the bedroom dark and cool, and limiting bright screens before bed.",
]

JUNK = [
    # Navigation menu
    "Home | About Us | Services | Products | Blog | Careers | Contact | Login | Sign Up | FAQ "
    "| Sitemap | Privacy Policy | Terms of Use",
    # Cookie banner
    "We value your privacy. We and our partners use cookies and similar technologies to store "
    "and access information on your device for personalised ads and content, ad and content "
    "measurement, audience insights and product development. By clicking \"Accept All\" you "
    "consent to our use of cookies. Accept All | Reject All | Manage Preferences | Cookie Policy",
    # SEO keyword spam
    "best shoes cheap shoes buy shoes online shoes sale discount shoes best cheap shoes online "
    "shoes shoes shoes running shoes cheap running shoes best price shoes shoes store shoes "
    "outlet cheap shoes free shipping best shoes 2024 shoes shoes buy now",
    # Pill spam
    "BUY CHEAP PILLS ONLINE!!! V1agra C1alis no prescription needed, lowest prices guaranteed, "
    "discreet shipping worldwide. 90% OFF today only!!! Click here >>> www.cheap-pills-4u.biz "
    "<<< order now and get FREE bonus pills!!!",
    # Keyboard mash
    "asdf jkl; qwerty asdfgh zxcvbnm qwertyuiop asdf asdf jjjj kkkk ;;;; lkjh gfdsa poiuy "
    "mnbvc xzxzxz qweqweqwe",
    # Tag list
    "Tags: travel, food, photography, summer, beach, sunset, vacation, friends, instagood, "
    "photooftheday, love, fashion, style, happy, nature, blessed, tbt, weekend, fun, selfie",
    # Lorem ipsum
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt "
    "ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation "
    "ullamco laboris nisi ut aliquip ex ea commodo consequat.",
    # Error page
    "404 Not Found. The requested URL /blog/2019/08/post-1234.html was not found on this "
    "server. Additionally, a 404 Not Found error was encountered while trying to use an "
    "ErrorDocument to handle the request. Apache/2.4.41 (Ubuntu) Server at example.com Port 80",
    # Social-share boilerplate
    "Share this: Facebook Twitter LinkedIn Pinterest WhatsApp Email Print. Like this: Like "
    "Loading... Related. Follow us on Instagram! Don't forget to like, share and subscribe!",
    # Casino spam
    "WIN BIG at Lucky777 Casino!!! Get a 500% welcome bonus + 200 free spins on your first "
    "deposit. Online casino slots poker roulette blackjack jackpot jackpot jackpot. Play now, "
    "withdraw instantly, best online casino 2024, casino bonus no deposit casino casino.",
    # Footer boilerplate
    "Copyright (c) 2008-2024 All Rights Reserved. Terms and Conditions | Privacy Notice | "
    "Accessibility | Do Not Sell My Personal Information | Cookie Settings | Site Map | Back "
    "to top",
    # JavaScript / login wall
    "Please enable JavaScript to view this page. You must be logged in to continue. Sign in "
    "with Google | Sign in with Facebook | Forgot your password? Don't have an account? "
    "Register here.",
    # SEO spam, different keywords
    "cheap hotels cheap hotels near me best cheap hotels book cheap hotels hotel deals hotel "
    "deals tonight last minute hotels cheap flights cheap hotels cheap hotels best price "
    "guarantee hotels hotels hotels cheap",
    # Newsletter popup
    "Subscribe to our newsletter! Enter your email address to receive exclusive offers, news "
    "and updates. [ Your email ] [ SUBSCRIBE ] No thanks, I don't like saving money. X Close",
    # Breadcrumbs and pagination
    "You are here: Home > Category > Subcategory > Page. Previous Page 1 2 3 4 5 6 7 8 9 10 "
    "... 87 Next >> Showing 1-20 of 1,734 results. Sort by: Relevance | Newest | Price",
    # Crypto get-rich spam
    "Make $5000 per DAY from home with this one weird crypto trick!!! Bitcoin doubler, send "
    "0.1 BTC get 0.2 BTC back GUARANTEED. Limited spots left. DM me now for the secret signal "
    "group. 100% legit no scam.",
    # Server error
    "500 Internal Server Error. Sorry, something went wrong. Error code: ERR_UPSTREAM_TIMEOUT. "
    "Request ID: 7f3a9c2e-41b8-4d6e-9a0f-2c5d8e1b7a44. Please try again later. Access denied. "
    "Reference #18.4f2c1d17.1712345678.2a9b3c",
    # Comment spam
    "Nice post!! very informative thanks for sharing. visit my site for best deals "
    "http://bestdeals-now.example >>> Great article!!! check my profile for free followers "
    "free likes. Reply | Report",
    # Chat noise
    "lol lol lol!!!! omg ok ok ok ?????? hahahahaha xD xD :) :) :) first!!! +1 +1 bump bump "
    "bump",
    # Related-posts / loading boilerplate
    "Loading... Please wait. Related posts: 10 Things You Won't Believe | You Need To See This "
    "| Top 5 Tips | Click To Read More | Sponsored Content | Advertisement | Read More >>",
]


def build():
  """The 40 documents, interleaved in a fixed pseudo-random order."""
  docs = [(t, "informative") for t in INFORMATIVE] + [(t, "junk") for t in JUNK]
  random.Random(2024).shuffle(docs)  # Fixed seed: mixed order, same every run.
  texts = [t for t, _ in docs]
  assert len(set(texts)) == len(texts) == 40, "documents must be distinct"
  for text, label in docs:
    if label == "informative":
      assert 80 <= len(text.split()) <= 250, (len(text.split()), text[:60])
  return [{"id": f"ex-{i:03d}", "text": t, "label": label}
          for i, (t, label) in enumerate(docs, start=1)]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--output", default=os.path.join(os.path.dirname(__file__), "corpus.jsonl"))
  args = parser.parse_args()
  with open(args.output, "w", encoding="utf-8") as f:
    for doc in build():
      f.write(json.dumps(doc, ensure_ascii=False) + "\n")
  print(f"wrote {args.output}")


if __name__ == "__main__":
  main()
