//! A synthetic corpus the project generates itself, deterministically from a seed: short stories from a
//! small grammar, and question/answer dialogues in BitNet's chat format (`User: ...<|eot_id|>Assistant:
//! ...<|eot_id|>`). The grammar combines characters, places, objects, feelings and events so that a
//! model must learn sentence structure and agreement (names, pronouns, "a"/"an") rather than memorize.
//!
//! Documents are separated by blank lines; [`crate::data`] wraps each in begin/end-of-text tokens.

use crate::model::Rng;

const GIRLS: &[&str] = &[
    "Lily", "Mia", "Emma", "Sara", "Anna", "Zoe", "Lucy", "Ella", "Nora", "Ruby", "Ivy", "Maya", "Lena", "Rosa",
];
const BOYS: &[&str] = &[
    "Tom", "Ben", "Sam", "Max", "Leo", "Jack", "Finn", "Noah", "Omar", "Hugo", "Eli", "Owen", "Theo", "Ravi",
];
/// (animal, sound, home)
const ANIMALS: &[(&str, &str, &str)] = &[
    ("cat", "meow", "in the house"),
    ("dog", "woof", "in a kennel"),
    ("cow", "moo", "on the farm"),
    ("duck", "quack", "by the pond"),
    ("owl", "hoot", "in a tree"),
    ("sheep", "baa", "in the field"),
    ("frog", "ribbit", "in the pond"),
    ("horse", "neigh", "in the stable"),
    ("bird", "tweet", "in a nest"),
    ("lion", "roar", "in the grass"),
    ("bee", "buzz", "in a hive"),
    ("mouse", "squeak", "in a hole"),
];
const ADJ: &[&str] = &[
    "big", "small", "red", "blue", "shiny", "old", "new", "soft", "green", "yellow", "happy", "funny", "little",
    "orange",
];
const OBJECTS: &[&str] = &[
    "ball", "kite", "box", "hat", "book", "apple", "cake", "boat", "drum", "shell", "key", "cup", "umbrella", "egg",
    "flower", "toy car",
];
const PLACES: &[&str] = &[
    "the park",
    "the beach",
    "the garden",
    "the forest",
    "the market",
    "the school",
    "the river",
    "the hill",
    "the zoo",
    "the library",
];
const FEELINGS: &[&str] = &[
    "happy",
    "sad",
    "scared",
    "excited",
    "tired",
    "proud",
    "surprised",
    "angry",
];
const WEATHER: &[&str] = &["sunny", "rainy", "windy", "cold", "warm", "snowy"];
const COLORS: &[(&str, &str)] = &[
    ("the sky", "blue"),
    ("grass", "green"),
    ("snow", "white"),
    ("a banana", "yellow"),
    ("a strawberry", "red"),
    ("the night", "dark"),
    ("an orange", "orange"),
    ("coal", "black"),
];
const NUMS: &[&str] = &[
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
];

fn pick<'a, T>(r: &mut Rng, xs: &'a [T]) -> &'a T {
    &xs[r.below(xs.len())]
}

fn article(word: &str) -> &'static str {
    match word.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u') => "an",
        _ => "a",
    }
}

fn cap(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// A character: name and pronouns.
struct Who {
    name: &'static str,
    he: &'static str,
    his: &'static str,
}

fn someone(r: &mut Rng) -> Who {
    if r.below(2) == 0 {
        Who {
            name: GIRLS[r.below(GIRLS.len())],
            he: "she",
            his: "her",
        }
    } else {
        Who {
            name: BOYS[r.below(BOYS.len())],
            he: "he",
            his: "his",
        }
    }
}

fn thing(r: &mut Rng) -> String {
    let adj = *pick(r, ADJ);
    let obj = *pick(r, OBJECTS);
    format!("{adj} {obj}")
}

/// One short story of four to seven sentences.
pub fn story(r: &mut Rng) -> String {
    let a = someone(r);
    let mut b = someone(r);
    while b.name == a.name {
        b = someone(r);
    }
    let place = *pick(r, PLACES);
    let (animal, sound, _) = *pick(r, ANIMALS);
    let t = thing(r);
    let weather = *pick(r, WEATHER);
    let feel = *pick(r, FEELINGS);
    let mut s = Vec::new();
    s.push(match r.below(4) {
        0 => format!(
            "Once upon a time, there was a little {} named {}.",
            if a.he == "she" { "girl" } else { "boy" },
            a.name
        ),
        1 => format!("One {weather} day, {} went to {place}.", a.name),
        2 => format!("{} had {} {t}.", a.name, article(&t)),
        _ => format!("{} lived near {place} with {} {animal}.", a.name, article(animal)),
    });
    let n = 3 + r.below(4);
    for _ in 0..n {
        s.push(match r.below(10) {
            0 => format!("{} saw {} {animal} at {place}.", cap(a.he), article(animal)),
            1 => format!("The {animal} said \"{sound}\" and {} laughed.", a.name),
            2 => format!("{} found {} {t} under a tree.", cap(a.he), article(&t)),
            3 => format!("{} met {} and they played together.", a.name, b.name),
            4 => format!("{} felt {feel} because {} lost {} {t}.", a.name, a.he, a.his),
            5 => format!("{} gave {} {t} to {}.", a.name, a.his, b.name),
            6 => format!("{} and {} ran to {place}.", a.name, b.name),
            7 => format!("\"Look at my {t}!\" said {}.", a.name),
            8 => format!("It was {weather}, so {} stayed with {} {animal}.", a.he, a.his),
            _ => format!("{} helped {} find {} {t}.", b.name, a.name, a.his),
        });
    }
    s.push(match r.below(4) {
        0 => format!("In the end, {} was very {feel}.", a.name),
        1 => format!("That night, {} went to bed with a smile.", a.name),
        2 => format!("{} and {} were best friends.", a.name, b.name),
        _ => "The end.".to_string(),
    });
    s.join(" ")
}

/// One question/answer exchange (one to three turns) in the chat format.
pub fn dialogue(r: &mut Rng) -> String {
    let turns = 1 + r.below(3);
    let mut out = String::new();
    for _ in 0..turns {
        let (q, a) = qa(r);
        out.push_str(&format!("User: {q}<|eot_id|>Assistant: {a}<|eot_id|>"));
    }
    out
}

fn qa(r: &mut Rng) -> (String, String) {
    match r.below(6) {
        0 => {
            let (animal, sound, _) = *pick(r, ANIMALS);
            match r.below(2) {
                0 => (
                    format!("What does {} {animal} say?", article(animal)),
                    format!("{} {animal} says {sound}.", cap(article(animal))),
                ),
                _ => (
                    format!("Which animal says {sound}?"),
                    format!("The {animal} says {sound}."),
                ),
            }
        }
        1 => {
            let (animal, _, home) = *pick(r, ANIMALS);
            (
                format!("Where does {} {animal} live?", article(animal)),
                format!("{} {animal} lives {home}.", cap(article(animal))),
            )
        }
        2 => {
            let x = r.below(7);
            let y = r.below(6);
            match r.below(2) {
                0 => (
                    format!("What is {} plus {}?", NUMS[x], NUMS[y]),
                    format!("{} plus {} is {}.", cap(NUMS[x]), NUMS[y], NUMS[x + y]),
                ),
                _ => {
                    let (hi, lo) = (x.max(y), x.min(y));
                    (
                        format!("What is {} minus {}?", NUMS[hi], NUMS[lo]),
                        format!("{} minus {} is {}.", cap(NUMS[hi]), NUMS[lo], NUMS[hi - lo]),
                    )
                }
            }
        }
        3 => {
            let (what, color) = *pick(r, COLORS);
            (format!("What color is {what}?"), format!("{} is {color}.", cap(what)))
        }
        4 => {
            let w = someone(r);
            let t = thing(r);
            (
                format!("Tell me about {}.", w.name),
                format!(
                    "{} is a child who likes {} {t}. {} plays at {} every day.",
                    w.name,
                    article(&t),
                    cap(w.he),
                    pick(r, PLACES)
                ),
            )
        }
        _ => {
            let n = 2 + r.below(8);
            let obj = *pick(r, OBJECTS);
            (format!("Count to {}.", NUMS[n]), {
                let words: Vec<String> = (1..=n).map(|i| cap(NUMS[i])).collect();
                let _ = obj;
                format!("{}.", words.join(", "))
            })
        }
    }
}

/// `n_docs` documents (about three stories to one dialogue), separated by blank lines.
pub fn generate(seed: u64, n_docs: usize) -> String {
    let mut r = Rng(seed ^ 0xC0FF_EE00_D0C5);
    let mut docs = Vec::with_capacity(n_docs);
    for _ in 0..n_docs {
        docs.push(if r.below(4) == 0 {
            dialogue(&mut r)
        } else {
            story(&mut r)
        });
    }
    docs.join("\n\n") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_varied() {
        let a = generate(7, 200);
        assert_eq!(a, generate(7, 200));
        assert_ne!(a, generate(8, 200));
        let docs: std::collections::HashSet<&str> = a.split("\n\n").collect();
        assert!(docs.len() > 190, "only {} distinct documents of 200", docs.len());
        assert!(a.contains("<|eot_id|>Assistant: "));
    }

    #[test]
    fn articles_agree() {
        assert_eq!(article("owl"), "an");
        assert_eq!(article("cat"), "a");
        let text = generate(3, 300);
        assert!(!text.contains(" a owl") && !text.contains(" a apple") && !text.contains(" an cat"));
    }
}
