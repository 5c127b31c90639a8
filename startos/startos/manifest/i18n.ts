export const short = {
  en_US: "Your household's AI, on the node you already run.",
}

export const long = {
  en_US:
    'Sovereign runs local models on your server, so everyday questions are answered at home. When a question needs a stronger model, it pays an outside model for that one request over Lightning through your own Core Lightning node: no subscription, no account. It strips names, addresses and numbers from what leaves the box, asks a person before agents spend or send data out, and everyone in the household signs in with Nostr.',
}

export const clnDependencyDescription = {
  en_US:
    'Optional: pays outside models and receives payments through your Core Lightning node. Without it, paying is off and everything else works.',
}
