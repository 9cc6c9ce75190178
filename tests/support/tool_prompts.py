"""Prompts that need a tool, with the tools they may call and the one a good model would pick.

Shared by tests/test_stand_in_tools.py (every call must parse and be valid: asserted) and
bench/agent.py (how often the small model picks the expected tool: measured, not asserted).
"""

from __future__ import annotations


def tool(name: str, description: str, properties: dict, required: list[str]) -> dict:
    """A tool declaration in Ollama's (and OpenAI's) format."""
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": properties, "required": required},
        },
    }


STATION = [
    tool(
        "search_handbook",
        "Search the station handbook for passages about a topic.",
        {
            "query": {"type": "string", "description": "what to look for"},
            "category": {
                "type": "string",
                "enum": ["safety", "travel", "daily-life", "science", "any"],
                "description": "the part of the handbook",
            },
        },
        ["query", "category"],
    ),
    tool(
        "contact_by_role",
        "Find the person, office and phone extension for a role on the station.",
        {"role": {"type": "string", "description": "a role, e.g. Station Director"}},
        ["role"],
    ),
    tool(
        "weather_limit",
        "The wind and visibility limits for an outdoor activity.",
        {"activity": {"type": "string", "description": "e.g. diving, snowmobiles, boats"}},
        ["activity"],
    ),
]

GENERAL = [
    tool(
        "get_weather",
        "Current weather in a city.",
        {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        ["city"],
    ),
    tool(
        "set_timer",
        "Start a countdown timer.",
        {"minutes": {"type": "integer", "description": "length of the timer"}, "label": {"type": "string"}},
        ["minutes"],
    ),
    tool(
        "convert_currency",
        "Convert an amount of money between currencies.",
        {
            "amount": {"type": "number"},
            "source": {"type": "string", "description": "currency code, e.g. EUR"},
            "target": {"type": "string", "description": "currency code, e.g. NOK"},
        },
        ["amount", "source", "target"],
    ),
    tool(
        "add_todo",
        "Add items to the to-do list.",
        {"items": {"type": "array", "items": {"type": "string"}}, "urgent": {"type": "boolean"}},
        ["items"],
    ),
]

# (prompt, tool set, expected tool)
PROMPTS: list[tuple[str, list[dict], str]] = [
    ("Who is the Station Director?", STATION, "contact_by_role"),
    ("What is the phone extension of the Field Safety Officer?", STATION, "contact_by_role"),
    ("Who should I call about a purchase approval, the Logistics Coordinator?", STATION, "contact_by_role"),
    ("Which office does the Chief Medical Officer work in?", STATION, "contact_by_role"),
    ("Give me the handheld radio number of the Marine Operations Lead.", STATION, "contact_by_role"),
    ("Who is the Head Chef?", STATION, "contact_by_role"),
    ("Above what wind speed must snowmobile trips stop?", STATION, "weather_limit"),
    ("What is the maximum wave height for diving from PETREL?", STATION, "weather_limit"),
    ("What is the minimum visibility for travel on the Brekka Glacier?", STATION, "weather_limit"),
    ("Can we take the boats out in 12 m/s wind?", STATION, "weather_limit"),
    ("What are the limits for work at height?", STATION, "weather_limit"),
    ("When must the quad bike stay in the garage because of wind?", STATION, "weather_limit"),
    ("Where is the muster point when the fire alarm sounds?", STATION, "search_handbook"),
    ("How do I report a near miss?", STATION, "search_handbook"),
    ("When are the quiet hours at the station?", STATION, "search_handbook"),
    ("How much baggage can I bring on the supply ship?", STATION, "search_handbook"),
    ("What happens to food waste on station?", STATION, "search_handbook"),
    ("How do I book a lab bench in Module C?", STATION, "search_handbook"),
    ("What is the weather like in Oslo right now?", GENERAL, "get_weather"),
    ("Is it raining in Tromso? Tell me in fahrenheit.", GENERAL, "get_weather"),
    ("How warm is it in Reykjavik?", GENERAL, "get_weather"),
    ("Set a timer for 12 minutes for the bread.", GENERAL, "set_timer"),
    ("Remind me in 45 minutes to check the freezer.", GENERAL, "set_timer"),
    ("Start a five minute tea timer.", GENERAL, "set_timer"),
    ("How many Norwegian kroner is 250 euros?", GENERAL, "convert_currency"),
    ("Convert 99.5 USD to EUR.", GENERAL, "convert_currency"),
    ("What are 1000 Swedish kronor in dollars?", GENERAL, "convert_currency"),
    ("Put milk, eggs and coffee on my to-do list.", GENERAL, "add_todo"),
    ("Add 'renew the radio licence' to my list, it is urgent.", GENERAL, "add_todo"),
    ("I need to remember to pack gloves and a headlamp.", GENERAL, "add_todo"),
    ("Note down: call the clinic, water the plants.", GENERAL, "add_todo"),
    ("Tell me the weather in Longyearbyen in celsius.", GENERAL, "get_weather"),
]
